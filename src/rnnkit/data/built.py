"""The split files of a dataset built on this machine (``rnnkit data handwriting|speech``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rnnkit.errors import ConfigError


def read_rows(root: str | Path, split: str, splits: Iterable[str]) -> list[tuple[Path, str, str]]:
    """``(file path, text, condition)`` of each line of ``<root>/<split>.tsv``, in order; ``splits``: those built."""
    splits = list(splits)
    if split not in splits:
        raise ConfigError(f"the dataset in {root} has no split {split!r} — use one of {', '.join(splits)}")
    rows = []
    for line in (Path(root) / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
        rel, text, condition = line.split("\t")
        rows.append((Path(root) / rel, text, condition))
    return rows
