"""Conventions every verb shares: loading a run, messages on stderr."""

from __future__ import annotations

import argparse
import sys


def add_load_args(p: argparse.ArgumentParser) -> None:
    """``--weights best|last`` and ``--device`` for verbs that load a run directory."""
    p.add_argument("--weights", choices=("best", "last"), default="best",
                   help="best validation loss (default) or the latest weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def info(message: str) -> None:
    """Progress and summaries go to stderr, so stdout carries only results (samples, JSON)."""
    print(message, file=sys.stderr, flush=True)
