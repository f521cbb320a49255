"""Command-line plumbing shared by every verb: one-line argparse errors, and flags derived from config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import typing


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`error: ... — see `rnnkit X --help``) and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} — see `{self.prog} --help`\n")


def add_dataclass_args(parser: argparse.ArgumentParser, cls, group_title: str) -> list[str]:
    """One ``--kebab-case`` flag per dataclass field (``metadata={"cli": False}`` skips one).

    Defaults are left as None so the caller can tell which flags were given; the dataclass holds the defaults.
    """
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
        help_text = f.metadata.get("help", "") + ("" if f.default is None else f" (default: {f.default})")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            metavar = f.name.split("_")[-1].upper()
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar=metavar, help=help_text)
        names.append(f.name)
    return names


def given(args: argparse.Namespace, names: list[str]) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}
