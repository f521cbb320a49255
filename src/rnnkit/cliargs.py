"""Command-line plumbing shared by every verb: one-line argparse errors, and flags derived from config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from pathlib import Path

SEED_MAX = 2**63 - 1  # the web API's bound too, so any sample it served can be drawn again with `rnnkit sample`


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`error: ... — see `rnnkit X --help``) and exit status 2, and every
    ``type=float`` flag takes finite numbers only (``nan`` and ``inf`` parse as floats, and no setting means them)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("type", float, finite_float)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} — see `{self.prog} --help`\n")


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def seed(text: str) -> int:
    """A random seed: an integer in 0..2**63-1 (torch's generators take up to 2**64-1, numpy's any size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text} is not a seed — use an integer from 0 to {SEED_MAX}")
    return value


def output_file(*suffixes: str):
    """An argparse type for a file a verb writes: it must end in one of ``suffixes`` (so a slip of the shell's
    completion cannot write a plot over ``best.safetensors`` or a corpus), and its directory must exist."""

    def check(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text} does not end in {' or '.join(suffixes)} — name a "
                                             f"{suffixes[0]} file")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory — name a {suffixes[0]} file")
        if not path.parent.is_dir():
            raise argparse.ArgumentTypeError(f"the directory {path.parent} does not exist — create it first")
        return path

    return check


#: ``--epochs``' default for the batch-trained verbs that set it only when no other budget is given, and its help
DEFAULT_EPOCHS = 20.0
EPOCHS_WITHOUT_BUDGET = f"{DEFAULT_EPOCHS:g} when neither --max-steps nor --minutes is given"


def add_dataclass_args(parser: argparse.ArgumentParser, cls, group_title: str,
                       defaults: dict[str, str] | None = None) -> list[str]:
    """One ``--kebab-case`` flag per dataclass field (``metadata={"cli": False}`` skips one).

    Defaults are left as None so the caller can tell which flags were given; the dataclass holds the defaults.
    ``defaults`` describes, by field name, a default the verb chooses itself (its help says so instead).
    """
    defaults = defaults or {}
    group = parser.add_argument_group(group_title)
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        args = typing.get_args(kind)
        if args:  # X | None
            kind = next(a for a in args if a is not type(None))
        default = defaults.get(f.name, f.default)
        help_text = f.metadata.get("help", "") + ("" if default in (None, "") else f" (default: {default})")
        if f.name == "seed" or f.name.endswith("_seed"):
            kind = seed
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            metavar = f.name.split("_")[-1].upper()
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar=metavar, help=help_text)
        names.append(f.name)
    return names


def given(args: argparse.Namespace, names: list[str]) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}
