"""Small real and hand-made data for the classification tests (test_classify_*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import require_data

TS_HEADER = """#hand-made for the tests, in the layout of aeon's JapaneseVowels_TRAIN.ts
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions {dims}
@equalLength false
@classLabel {labelled}
@data
"""


def write_ts(path: Path, series: list[np.ndarray], labels: list[str] | None = None) -> Path:
    """A UEA ``.ts`` file: one line per series, channels separated by ``:``, the class label last."""
    dims = series[0].shape[1]
    head = TS_HEADER.format(dims=dims, labelled=f"true {' '.join(sorted(set(labels)))}" if labels else "false")
    lines = []
    for i, s in enumerate(series):
        channels = [",".join(f"{v:.6f}" for v in s[:, c]) for c in range(dims)]
        lines.append(":".join(channels + ([labels[i]] if labels else [])))
    path.write_text(head + "\n".join(lines) + "\n")
    return path


def sentiment_sample(path: Path, per_file: int = 100) -> Path:
    """The first ``per_file`` lines of each real sentiment file, bytes as they are (CRLF ends, literal quotes)."""
    folder = require_data("sentiment")
    chunks = []
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        lines = (folder / name).read_bytes().split(b"\n")
        chunks += [ln + b"\n" for ln in lines[:per_file]]
    path.write_bytes(b"".join(chunks))
    return path


def names_sample(folder: Path, languages=("Chinese", "Greek", "Italian", "Japanese")) -> Path:
    """A folder of <language>.txt files copied from the real names data."""
    source = require_data("names")
    folder.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        (folder / f"{lang}.txt").write_bytes((source / f"{lang}.txt").read_bytes())
    return folder
