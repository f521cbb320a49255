"""Checkpoints: a run directory of safetensors + JSON, written atomically. Never pickle.

    RUN_DIR/config.json                 format version, model kind and config, vocabulary, training config, data
    RUN_DIR/model.safetensors           the latest weights
    RUN_DIR/best.safetensors            the weights with the best validation loss so far
    RUN_DIR/trainer_state.safetensors   optimizer, step, RNG states, data position, carried hidden state

Every safetensors file carries a sha256 of its tensors in its header, so a tampered or truncated file is
refused instead of loaded. Each file is written to a temporary file in the same directory, fsynced, then renamed
over the old one: a crash leaves either the old file or the new one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from rnnkit.data.vocab import CharVocab
from rnnkit.errors import CheckpointError, RnnkitError
from rnnkit.models import MODEL_KINDS

FORMAT_VERSION = 1
CONFIG = "config.json"
MODEL = "model.safetensors"
BEST = "best.safetensors"
TRAINER_STATE = "trainer_state.safetensors"


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new file next to ``path`` with the permissions any new file gets (0666 less the umask), as
    ``open(path, "w")`` would make it; ``tempfile.mkstemp`` makes 0600, which would hide a run from its group."""
    while True:
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp"))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
        except OSError as e:  # a read-only or missing directory: name the file the user asked for
            raise type(e)(e.errno, e.strerror, str(path)) from None


def check_writable(path: Path) -> None:
    """Raise the OSError that writing ``path`` would (naming it), now rather than after minutes of work: a file is
    made beside it and removed. Nothing is written to ``path`` itself."""
    fd, tmp = _temporary_beside(Path(path))
    os.close(fd)
    os.unlink(tmp)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format_version": str(FORMAT_VERSION), "sha256": tensor_digest(tensors)}
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    atomic_write(path, st_save(tensors, metadata=meta))


def load_tensors(path: Path) -> tuple[dict[str, Tensor], dict]:
    """Tensors and metadata of a file written by ``save_tensors``; CheckpointError if it is damaged."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is missing — the run directory holds no such checkpoint")
    try:
        raw = path.read_bytes()
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}) — restore it from a backup or train again") from None
    _check_version(meta.get("format_version"), path)
    if meta.get("sha256") != tensor_digest(tensors):
        raise CheckpointError(
            f"{path} does not match its checksum (tampered or corrupt) — restore it from a backup or train again"
        )
    try:
        extra = {k: json.loads(v) for k, v in meta.items() if k not in ("format_version", "sha256")}
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} has a damaged header — restore it from a backup or train again") from None
    return tensors, extra


def _check_version(version, where: Path) -> None:
    if str(version) != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{where} was written in checkpoint format {version}, this rnnkit reads format {FORMAT_VERSION} — "
            "use the rnnkit version that wrote it, or train again"
        )


def write_json(path: Path, obj: dict) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


_NULL = type(None)
_RUN = {"model": dict, "train": dict, "data": dict}
#: the parts of config.json that the verbs of each kind of run read, and their JSON types. A part of the wrong type
#: is refused in one line instead of failing deep inside a verb; so is a missing one, in a run the command line
#: wrote (it records ``rnnkit_version``), and elsewhere one that loading the model needs (``REQUIRED``: a program
#: that writes its own config.json to load weights may leave the others out).
SECTIONS = {
    "language_model": {**_RUN, "vocab": dict, "data.path": str, "data.source": str, "data.description": str,
                       "train.eval_streams": int},
    "classifier": {**_RUN, "classes": list, "vocab": (dict, _NULL), "data.spec": dict},
    "conditional_generator": {**_RUN, "classes": (list, _NULL), "vocab": dict, "data.spec": dict, "data.kind": str},
    "forecaster": {**_RUN, "data.split": dict, "data.columns": list},
    "tagger": {**_RUN, "tags": list, "vocab": dict, "data.spec": dict},
    "seq2seq": {**_RUN, "src_vocab": dict, "tgt_vocab": dict, "data.spec": dict},
    "ctc_recognizer": {**_RUN, "data.root": str, "data.limit": (int, _NULL), "data.info": dict},
}
#: the commands that take each kind of run
COMMANDS = {"language_model": "rnnkit train --resume|sample|eval|serve|visualize|export",
            "classifier": "rnnkit classify", "conditional_generator": "rnnkit generate",
            "forecaster": "rnnkit forecast", "seq2seq": "rnnkit translate", "ctc_recognizer": "rnnkit recognize",
            "tagger": "rnnkit tag"}
REQUIRED = {kind: ("model", "vocab") if kind in ("language_model", "tagger") else ("model",) for kind in SECTIONS}


def _check_sections(config: dict, path: Path) -> None:
    kind = config.get("kind")
    sections = SECTIONS.get(kind, {})
    required = sections if "rnnkit_version" in config else REQUIRED.get(kind, ())
    for key, types in sections.items():
        value = config
        for part in key.split("."):
            value = value.get(part, KeyError) if isinstance(value, dict) else KeyError
        if value is KeyError and key not in required:
            continue
        if value is KeyError or not isinstance(value, types) or isinstance(value, bool) and types is int:
            what = "has no" if value is KeyError else "has a damaged"
            raise CheckpointError(f"{path} {what} {key!r} — the checkpoint is damaged; restore config.json from a "
                                  "copy or train again")


def read_config(run_dir: Path, kind: str | None = None) -> dict:
    """The run's config.json, checked for presence, syntax, format version, (if given) the model kind, and the
    sections its kind's verbs read (``SECTIONS``)."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory — pass the --out directory of `rnnkit train`")
    if not path.exists():
        raise CheckpointError(
            f"{run_dir} holds no checkpoint (no {CONFIG}) — pass the --out directory of a training run"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}) — restore it from a backup or train again") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is corrupt (not a JSON object) — restore it from a backup or train again")
    _check_version(config.get("format_version"), path)
    if not isinstance(config.get("kind"), str):
        raise CheckpointError(f"{path} names no model kind — the checkpoint is damaged; restore config.json from a "
                              "copy or train again")
    if kind is not None and config.get("kind") != kind:
        verb = COMMANDS.get(config.get("kind"))
        raise CheckpointError(f"{run_dir} holds a {config.get('kind')} run, not a {kind} — "
                              + (f"use `{verb}` with it" if verb else "pass a run of that kind"))
    _check_sections(config, path)
    return config


def build_model(config: dict) -> nn.Module:
    """Rebuild the model a config.json describes (weights not loaded)."""
    kind = config.get("kind")
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"config.json names an unknown model kind {kind!r} — it needs a newer rnnkit")
    model_cls, config_cls = MODEL_KINDS[kind]
    try:
        return model_cls(config_cls(**{**getattr(config_cls, "SAVED_WITHOUT", {}), **config["model"]}))
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"config.json has an invalid model section ({e}) — the checkpoint is damaged") from None


def weights_file(run_dir: Path, weights: str = "best") -> Path:
    """The file ``--weights`` names: ``best`` is the latest weights until a first validation has kept a best."""
    return Path(run_dir) / (BEST if weights == "best" and (Path(run_dir) / BEST).exists() else MODEL)


def weights_read(run_dir: Path, weights: str = "best") -> str:
    """``best`` or ``last``: which weights ``--weights`` reads, for the reports that name them."""
    return "best" if weights_file(run_dir, weights).name == BEST else "last"


def load_weights(run_dir: Path, weights: str = "best", device: str | torch.device = "cpu",
                 kind: str | None = None) -> tuple[nn.Module, dict]:
    """``(model in eval mode, config)`` from a run directory; ``weights`` is ``best`` (falls back to last) or
    ``last``; ``kind`` (e.g. ``classifier``) refuses runs of another kind."""
    run_dir = Path(run_dir)
    config = read_config(run_dir, kind)
    if weights not in ("best", "last"):
        raise CheckpointError(f"unknown weights {weights!r} — use 'best' or 'last'")
    path = weights_file(run_dir, weights)
    if not path.exists():
        raise CheckpointError(f"{run_dir} holds no weights yet ({MODEL} is missing) — train first")
    model = build_model(config)
    tensors, _ = load_tensors(path)
    load_model_tensors(model, tensors, path)
    return model.to(device).eval(), config


def load_run(run_dir: Path, weights: str = "best", device: str | torch.device = "cpu"):
    """``(model, vocab, config)`` of a language-model run (see ``load_weights``)."""
    model, config = load_weights(run_dir, weights, device, kind="language_model")
    try:
        vocab = CharVocab.from_dict(config["vocab"])
    except (KeyError, RnnkitError):
        raise CheckpointError(f"{run_dir / CONFIG} holds no valid vocabulary — the checkpoint is damaged") from None
    if len(vocab) != config["model"].get("vocab_size"):
        raise CheckpointError(f"{run_dir / CONFIG} holds a vocabulary of {len(vocab)} characters for a model of "
                              f"{config['model'].get('vocab_size')} — the checkpoint is damaged; restore config.json")
    return model, vocab, config


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """``state_dict`` with tied weights stored once (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for name, t in model.state_dict().items():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            out[name] = t
    return out


def load_model_tensors(model: nn.Module, tensors: dict[str, Tensor], where: Path) -> None:
    """Load what ``model_tensors`` saved; CheckpointError if names or shapes do not fit the model."""
    expected = set(model_tensors(model))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{where} does not fit config.json (missing {missing[:3]}, unexpected {unexpected[:3]}) — "
            "the checkpoint is damaged"
        )
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{where} does not fit config.json ({first}) — the checkpoint is damaged") from None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict]]:
    """An optimizer's state as flat tensors (``optim.<param>.<key>``) plus its param groups (JSON-able)."""
    sd = optimizer.state_dict()
    tensors = {
        f"optim.{pid}.{key}": v if torch.is_tensor(v) else torch.tensor(v)
        for pid, state in sd["state"].items()
        for key, v in state.items()
    }
    return tensors, sd["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], param_groups: list[dict]) -> None:
    """Inverse of ``optimizer_tensors`` (other keys in ``tensors`` are ignored)."""
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
