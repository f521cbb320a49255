"""Numeric sequences: UEA/UCR ``.ts`` files and the archive datasets that ship inside aeon, and per-feature scaling.

aeon (the ``classical`` extra) does the parsing; it is imported when a series is loaded, not when rnnkit is.
Shape letters: T steps, C features (channels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnkit.errors import CorpusError

EXTRA = "pip install 'rnnkit[classical]'"


def _aeon_datasets():
    try:
        import aeon.datasets
    except ImportError:
        raise CorpusError(f"loading UEA/UCR series needs aeon — {EXTRA}") from None
    return aeon.datasets


def shipped_uea_names() -> list[str]:
    """The classification archive datasets in aeon's own package data (loaded without any download)."""
    root = Path(_aeon_datasets().__file__).parent / "data"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(f"{p.name}_TRAIN.ts")))


def _as_steps(X) -> list[np.ndarray]:
    """aeon's ``(N, C, T)`` array or list of ``(C, T_i)`` arrays -> a list of ``(T_i, C)`` float32 arrays."""
    return [np.ascontiguousarray(np.asarray(x, dtype=np.float32).T) for x in X]


def load_uea(name: str) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """``(train_x, train_labels, test_x, test_labels)`` of a shipped UEA/UCR dataset, with its official split."""
    datasets = _aeon_datasets()
    shipped = shipped_uea_names()
    match = {_key(n): n for n in shipped}.get(_key(name))
    if match is None:
        raise CorpusError(f"{name!r} is not a UEA/UCR dataset shipped with aeon (those are: {', '.join(shipped)}) "
                          "— pass a .ts file instead")
    out = []
    for split in ("train", "test"):
        X, y = datasets.load_classification(match, split=split, extract_path=str(Path(datasets.__file__).parent
                                                                                   / "data"))
        out += [_as_steps(X), np.asarray(y).astype(str)]
    return out[0], out[1], out[2], out[3]


def _key(name: str) -> str:
    """``japanese_vowels``, ``JapaneseVowels`` and ``japanese-vowels`` name the same dataset."""
    return name.replace("_", "").replace("-", "").lower()


def load_ts_file(path: str | Path, labels: bool = True) -> tuple[list[np.ndarray], np.ndarray | None]:
    """``(sequences, labels)`` from a UEA/UCR ``.ts`` file (equal or unequal lengths, any number of channels);
    ``labels=False`` reads unlabelled series (labels None)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CorpusError(f"{path} {what} — pass a UEA/UCR .ts file")
    datasets = _aeon_datasets()
    try:
        loaded = datasets.load_from_ts_file(str(path))
    except (OSError, ValueError) as e:
        raise CorpusError(f"{path} is not a readable .ts file ({str(e).splitlines()[0]}) — check its header") from None
    X, y = loaded if isinstance(loaded, tuple) else (loaded, None)
    sequences = _as_steps(X)
    bad = next((i for i, s in enumerate(sequences) if not np.isfinite(s).all()), None)
    if bad is not None:
        raise CorpusError(f"{path}: series #{bad} (from 0) holds NaN or infinite values — fill or drop them first")
    if not labels:
        return sequences, None
    if y is None or len(y) == 0:
        raise CorpusError(f"{path} holds no class labels — a classifier needs '@classLabel true ...' and labels")
    labels_ = np.asarray(y).astype(str)
    declared = _declared_labels(path)
    stray = sorted(set(labels_.tolist()) - set(declared)) if declared else []
    if stray:
        raise CorpusError(f"{path} labels series {stray[0]!r}, which its '@classLabel' line does not declare "
                          f"({' '.join(declared)}) — fix the label or declare it")
    return sequences, labels_


def _declared_labels(path: Path) -> list[str]:
    """The class labels a .ts header's ``@classLabel true a b c`` line declares ([] when there is none)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.split()
            if words and words[0].lower() == "@data":
                break
            if len(words) > 2 and words[0].lower() == "@classlabel" and words[1].lower() == "true":
                return words[2:]
    return []


def fit_scaler(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation over every step of ``sequences`` (a constant feature gets 1)."""
    steps = np.concatenate([np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in sequences])
    if not np.isfinite(steps).all():
        raise CorpusError("the series hold NaN or infinite values — fill or drop them first")
    std = steps.std(0)
    return steps.mean(0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)
