"""Conventions every verb shares: loading a run, messages on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_load_args(p: argparse.ArgumentParser) -> None:
    """``--weights best|last`` and ``--device`` for verbs that load a run directory."""
    p.add_argument("--weights", choices=("best", "last"), default="best",
                   help="best validation loss (default) or the latest weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def add_run_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--out``, ``--resume`` and ``--quiet`` for verbs that train into a run directory."""
    p.add_argument("--out", type=Path, help=f"run directory to create (default: runs/{prefix}<date-time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def info(message: str) -> None:
    """Progress and summaries go to stderr, so stdout carries only results (samples, JSON)."""
    print(message, file=sys.stderr, flush=True)


def start_run(trainer, config: dict, run_dir: Path, resume: bool) -> None:
    """Resume ``trainer`` when asked, then write ``config.json`` with the training config as it now stands."""
    from rnnkit.checkpoint import CONFIG, write_json

    if resume:
        trainer.resume()
    config["train"] = trainer.config.to_dict()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, config)
