"""Checkpoints: round trip, tamper and corruption detection, version checks, atomic writes."""

import json
import os

import pytest
import torch
from safetensors.torch import save as safetensors_save

from rnnkit.checkpoint import (
    BEST,
    CONFIG,
    FORMAT_VERSION,
    MODEL,
    atomic_write,
    load_run,
    load_tensors,
    load_weights,
    model_tensors,
    read_config,
    save_tensors,
    tensor_digest,
    weights_read,
    write_json,
)
from rnnkit.data import CharVocab
from rnnkit.errors import CheckpointError
from rnnkit.models import LanguageModel, LanguageModelConfig


def write_run(run_dir, tie=False):
    vocab = CharVocab("abcdefgh \n")
    cfg = LanguageModelConfig(vocab_size=len(vocab), cell="gru", hidden_size=12, num_layers=2,
                              embedding_size=12, tie_weights=tie)
    model = LanguageModel(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, {"format_version": FORMAT_VERSION, "kind": "language_model",
                                  "model": cfg.to_dict(), "vocab": vocab.to_dict(), "train": {}})
    save_tensors(run_dir / MODEL, model_tensors(model), {"step": 3})
    return model, vocab


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_gives_identical_logits(tmp_path, tie):
    model, vocab = write_run(tmp_path / "run", tie)
    loaded, loaded_vocab, config = load_run(tmp_path / "run", "last")
    x = torch.randint(0, len(vocab), (2, 15))
    assert torch.equal(model.eval()(x).logits, loaded(x).logits)
    assert loaded_vocab.chars == vocab.chars
    if tie:
        assert loaded.head.weight is loaded.embedding.weight


def test_best_falls_back_to_last_and_prefers_best(tmp_path):
    model, _ = write_run(tmp_path / "run")
    loaded, _, _ = load_run(tmp_path / "run", "best")  # no best.safetensors yet: last
    assert torch.equal(loaded.head.weight, model.head.weight)
    assert weights_read(tmp_path / "run", "best") == "last"  # what the reports then name
    other = {k: v + 1 for k, v in model_tensors(model).items()}
    save_tensors(tmp_path / "run" / BEST, other)
    loaded, _, _ = load_run(tmp_path / "run", "best")
    assert torch.equal(loaded.head.weight, model.head.weight + 1)
    assert [weights_read(tmp_path / "run", w) for w in ("best", "last")] == ["best", "last"]


def test_tampered_weights_are_refused(tmp_path):
    write_run(tmp_path / "run")
    path = tmp_path / "run" / MODEL
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01  # one bit in the tensor data; safetensors itself would not notice
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_run(tmp_path / "run", "last")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights_are_refused(tmp_path, damage):
    write_run(tmp_path / "run")
    path = tmp_path / "run" / MODEL
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(tmp_path / "run", "last")


def test_other_format_version_is_refused(tmp_path):
    write_run(tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / CONFIG).read_text())
    cfg["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "run" / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=f"format {FORMAT_VERSION + 1}"):
        load_run(tmp_path / "run")


def test_a_missing_format_version_is_refused(tmp_path):
    """Neither config.json nor a weights file without a format version is read as the current format."""
    write_run(tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / CONFIG).read_text())
    del cfg["format_version"]
    (tmp_path / "run" / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format None"):
        load_run(tmp_path / "run")
    tensors = {"a": torch.arange(4.0)}
    raw = safetensors_save(tensors, metadata={"sha256": tensor_digest(tensors)})  # all but the version
    (tmp_path / "t.safetensors").write_bytes(raw)
    with pytest.raises(CheckpointError, match="format None"):
        load_tensors(tmp_path / "t.safetensors")
    (tmp_path / "t.safetensors").write_bytes(safetensors_save(tensors))  # no metadata at all
    with pytest.raises(CheckpointError, match="format None"):
        load_tensors(tmp_path / "t.safetensors")


def _header(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_header(path, header, data):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


@pytest.mark.parametrize("edit", ["dtype", "shape"])
def test_a_header_that_reinterprets_the_same_bytes_is_refused(tmp_path, edit):
    """The checksum covers each tensor's dtype and shape as well as its bytes: float32 read as int32, or a (2, 3)
    tensor read as (3, 2), is refused though not one byte of data changed."""
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"a": torch.arange(6.0).reshape(2, 3)})
    header, data = _header(path)
    header["a"].update(dtype="I32") if edit == "dtype" else header["a"].update(shape=[3, 2])
    _write_header(path, header, data)
    with pytest.raises(CheckpointError, match="checksum"):
        load_tensors(path)


def test_the_digest_depends_on_names_dtypes_and_shapes():
    t = torch.arange(6.0).reshape(2, 3)
    digest = tensor_digest({"a": t})
    assert digest == tensor_digest({"a": t.clone()})
    others = [{"b": t}, {"a": t.view(torch.int32)}, {"a": t.reshape(-1)}, {"a": t.reshape(3, 2)}, {"a": t.T}]
    assert len({digest, *(tensor_digest(o) for o in others)}) == 1 + len(others)


def test_missing_run_and_missing_weights(tmp_path):
    with pytest.raises(CheckpointError, match="not a run directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(tmp_path / "empty")
    write_run(tmp_path / "run")
    (tmp_path / "run" / MODEL).unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_run(tmp_path / "run")


def test_weights_that_do_not_fit_the_config(tmp_path):
    write_run(tmp_path / "run")
    save_tensors(tmp_path / "run" / MODEL, {"head.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_run(tmp_path / "run", "last")


def test_weights_with_an_unexpected_tensor_are_refused(tmp_path):
    model, _ = write_run(tmp_path / "run")
    save_tensors(tmp_path / "run" / MODEL, {**model_tensors(model), "junk": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"does not fit config.json \(missing \[\], unexpected \['junk'\]\)"):
        load_weights(tmp_path / "run", "last")


def test_a_bool_is_not_an_int_section(tmp_path):
    """JSON true is a Python bool, which is an int: ``train.eval_streams: true`` is damaged, 8 is fine."""
    write_run(tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / CONFIG).read_text())
    for value in (8, True, "8", 2.0):
        cfg["train"]["eval_streams"] = value
        (tmp_path / "run" / CONFIG).write_text(json.dumps(cfg))
        if value == 8:
            assert read_config(tmp_path / "run", "language_model")["train"]["eval_streams"] == 8
        else:
            with pytest.raises(CheckpointError, match="has a damaged 'train.eval_streams'"):
                read_config(tmp_path / "run", "language_model")


def test_metadata_round_trip_and_atomic_write_leaves_no_temp_files(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64),
               "c": torch.ones(2, dtype=torch.bfloat16)}
    save_tensors(tmp_path / "t.safetensors", tensors, {"step": 7, "groups": [{"lr": 0.1}]})
    loaded, meta = load_tensors(tmp_path / "t.safetensors")
    assert meta == {"step": 7, "groups": [{"lr": 0.1}]}
    for k in tensors:
        assert torch.equal(loaded[k], tensors[k])
    atomic_write(tmp_path / "t.safetensors", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
    assert (tmp_path / "t.safetensors").read_bytes() == b"new"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_permissions_of_any_new_file(tmp_path, umask):
    """0666 less the umask, as open() gives (tempfile.mkstemp's 0600 would hide a run from its group)."""
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
        (tmp_path / "b.json").write_bytes(b"{}")
    finally:
        os.umask(old)
    mode = (tmp_path / "a.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == (tmp_path / "b.json").stat().st_mode & 0o777


@pytest.mark.parametrize("fail", ["replace", "fsync", "write"])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, fail):
    path = tmp_path / "config.json"
    atomic_write(path, b"old")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fail == "write":
        monkeypatch.setattr(os, "fdopen", _Full)
    else:
        monkeypatch.setattr(os, fail, broken)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert path.read_bytes() == b"old"


class _Full:
    """A file object whose write fails, as on a full disk; it closes its descriptor like os.fdopen's file."""

    def __init__(self, fd, mode):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data):
        raise OSError(28, "No space left on device")


def test_a_refused_atomic_write_names_the_file_not_its_temporary(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(tmp_path / "missing" / "config.json", b"{}")
    assert info.value.filename == str(tmp_path / "missing" / "config.json")
