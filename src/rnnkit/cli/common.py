"""Conventions every verb shares: loading a run, messages on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_load_args(p: argparse.ArgumentParser) -> None:
    """``--weights best|last`` and ``--device`` for verbs that load a run directory."""
    p.add_argument("--weights", choices=("best", "last"), default="best",
                   help="best: the checkpoint with the best validation figure (loss; accuracy for classifiers "
                        "and taggers, error rate for recognisers), or the latest until a first validation; last: the "
                        "latest weights (default: best)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def add_predictions_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--predictions FILE.jsonl`` for an eval verb: ``what`` it writes for every test example."""
    from rnnkit.cliargs import output_file

    p.add_argument("--predictions", type=output_file(".jsonl"), metavar="FILE",
                   help=f"write {what}, one JSON object a line (checked writable before the scoring)")


def write_jsonl(path: Path, rows) -> None:
    """``rows`` (dicts) as JSON lines, written atomically."""
    import json

    from rnnkit.checkpoint import atomic_write

    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))


def add_run_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--out``, ``--resume`` and ``--quiet`` for verbs that train into a run directory."""
    p.add_argument("--out", type=Path, help=f"run directory to create (default: runs/{prefix}<date-time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def budget(config) -> str:
    """A training config's budget in words: ``1,200 steps``, ``12 minutes``, or both (whichever ends first)."""
    parts = [f"{config.max_steps:,} steps" if config.max_steps else "",
             f"{config.minutes:g} minute{'' if config.minutes == 1 else 's'}" if config.minutes else ""]
    return " or ".join(p for p in parts if p) + (", whichever ends first" if all(parts) else "")


def info(message: str) -> None:
    """Progress and summaries go to stderr, so stdout carries only results (samples, JSON)."""
    print(message, file=sys.stderr, flush=True)


def stopped(summary: dict, train_command: str, run_dir: Path) -> bool:
    """After ``fit``: True (and how to go on, on stderr) when Ctrl-C stopped the run; the verb then exits 130."""
    if summary["interrupted"]:
        info(f"stopped at step {summary['step']}; continue with: {train_command} --resume {run_dir}")
    elif summary.get("steps_run") == 0:
        flags = "--max-steps or --minutes" if train_command == "rnnkit train" else "--max-steps, --epochs or --minutes"
        info(f"the run's budget was spent at step {summary['step']}, so nothing was trained — resume with a larger "
             f"{flags}")
    return summary["interrupted"]


def fit_and_report(trainer, group: str, run_dir: Path) -> int:
    """Train a run that validates by accuracy (classify, tag) and say how it ended: the exit status, 130 for
    Ctrl-C."""
    summary = trainer.fit()
    if stopped(summary, f"rnnkit {group} train", run_dir):
        return 130
    if trainer.validates:
        done = (f"validation accuracy {summary['val_accuracy']:.4f}, loss {summary['val_loss']:.4f} (best "
                f"checkpoint: accuracy {-trainer.best_key[0]:.4f})")
    else:
        done = "no validation split (--val-fraction 0): the final weights are kept"
    info(f"done: {summary['step']} steps in {summary['elapsed_s']:.0f} s; {done}; "
         f"test it with: rnnkit {group} eval {run_dir}")
    return 0


def start_run(trainer, config: dict, run_dir: Path, resume: bool) -> None:
    """Resume ``trainer`` when asked, then record ``config.json`` with the training config as it now stands: at once
    for a new run, with the first checkpoint for a resumed one (``LoopTrainer.pending_config``)."""
    from rnnkit.checkpoint import CONFIG, write_json

    config["train"] = trainer.config.to_dict()
    if resume:
        trainer.resume()
        trainer.pending_config = config
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, config)


def resumed_config(args: argparse.Namespace, kind: str, data_flags: tuple[str, ...], model_flags: dict):
    """``(run_dir, config)`` of the run ``--resume`` names. A data flag, another ``--out`` or a changed model flag
    is refused (ConfigError): a run keeps the data and the model it started with."""
    from rnnkit.checkpoint import read_config
    from rnnkit.errors import ConfigError

    run_dir = args.resume
    config = read_config(run_dir, kind=kind)
    refused = [f"--{f.replace('_', '-')}" for f in data_flags if getattr(args, f) is not None]
    refused += ["--out"] if args.out not in (None, run_dir) else []
    refused += [f"--{k.replace('_', '-')}" for k, v in model_flags.items() if config["model"].get(k) != v]
    if refused:
        raise ConfigError(f"{refused[0]} cannot be given when resuming: the run keeps its data and model — drop it, "
                          "or start a new --out")
    return run_dir, config


def new_run_dir(args: argparse.Namespace, prefix: str = "") -> Path:
    """``--out``, or ``runs/[<prefix>-]<date-time>``. Refused: a directory that already holds a run, a file, and a
    directory with no config.json that holds a file a run writes (``metrics.csv``, ``loss.png``, a checkpoint):
    the user's or a dataset's own, which the run would write over. Other files (``train.log`` that the shell made
    for the run's output) are left beside it. A run that stopped before its first checkpoint (config.json,
    perhaps metrics rows) is started again."""
    import time

    from rnnkit.checkpoint import BEST, CONFIG, MODEL, TRAINER_STATE
    from rnnkit.errors import ConfigError

    run_dir = args.out or Path("runs") / time.strftime(f"{prefix}-%Y%m%d-%H%M%S" if prefix else "%Y%m%d-%H%M%S")
    if (run_dir / MODEL).exists() or (run_dir / TRAINER_STATE).exists():
        raise ConfigError(f"{run_dir} already holds a training run — pass --resume {run_dir} to continue it, "
                          "or choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file — choose a directory for --out")
    ours = [n for n in (BEST, "loss.png", "metrics.csv") if (run_dir / n).exists()]
    if ours and not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir} holds {', '.join(ours)} but no run — a run there would write over them; choose "
                          "a new or empty directory for --out")
    if (run_dir / CONFIG).exists() and (why := _not_a_run(run_dir)):
        raise ConfigError(f"{run_dir} holds a {CONFIG} that is not a run this rnnkit can take over ({why}) — a run "
                          "there would write over it; choose a new or empty directory for --out")
    return run_dir


def _not_a_run(run_dir: Path) -> str | None:
    """Why ``run_dir/config.json`` is not a run of this rnnkit that stopped before its first checkpoint, or None."""
    from rnnkit.checkpoint import read_config
    from rnnkit.errors import CheckpointError
    from rnnkit.models import MODEL_KINDS

    try:
        kind = read_config(run_dir)["kind"]
    except CheckpointError as e:
        return str(e).split(" — ")[0].replace(f"{run_dir / 'config.json'} ", "")
    return None if kind in MODEL_KINDS else f"an unknown model kind {kind!r}"


def stdin_text() -> str:
    """stdin as UTF-8 text, checked as input files are: the locale may decode it leniently (surrogateescape under
    C), and a binary or Latin-1 stream would then be read line by line as if it were text."""
    from rnnkit.errors import CorpusError

    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # already text (a StringIO)
        return sys.stdin.read()
    raw = stream.read()
    if b"\0" in raw:
        raise CorpusError("stdin is binary (it contains NUL bytes) — pipe text, one input per line")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"stdin is not UTF-8 (bad byte at offset {e.start}) — convert it first, e.g. "
                          "`iconv -f latin1 -t utf-8`") from None


def stdin_lines() -> list[str]:
    """The non-blank lines of stdin (``stdin_text``), line ends stripped."""
    return [ln.rstrip("\r") for ln in stdin_text().split("\n") if ln.strip()]
