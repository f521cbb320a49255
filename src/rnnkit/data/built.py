"""The split files of a dataset built on this machine (``rnnkit data handwriting|speech``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rnnkit.errors import ConfigError, CorpusError


def read_rows(root: str | Path, split: str, splits: Iterable[str]) -> list[tuple[Path, str, str]]:
    """``(file path, text, condition)`` of each line of ``<root>/<split>.tsv``, in order; ``splits``: those built."""
    splits = list(splits)
    if split not in splits:
        raise ConfigError(f"the dataset in {root} has no split {split!r} — use one of {', '.join(splits)}")
    path = Path(root) / f"{split}.tsv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{path} is missing — the dataset is incomplete; build it again") from None
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 (byte {e.start}) — the dataset is damaged; build it again") from None
    rows = []
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) != 3:
            raise CorpusError(f"{path}, line {number}: {len(fields)} tab-separated fields, not 3 (file, text, "
                              "condition) — the dataset is damaged; build it again")
        rows.append((Path(root) / fields[0], fields[1], fields[2]))
    return rows
