"""Frames and transcripts for CTC recognition: a built handwriting or speech dataset read into padded batches.

A dataset directory (``rnnkit data handwriting|speech``) holds ``dataset.json`` (its ``kind``: ``handwriting`` or
``speech``) and one ``<split>.tsv`` per split (``file<TAB>text<TAB>condition``). ``featurizer`` turns one file into
frames the same way for training and for ``rnnkit recognize predict``: an image into its pixel columns
(``image_frames``: T = width, C = height, ink = 1), a WAV file into log-mel frames (``wav_frames``: C = n_mels).

Targets are characters of the dataset's alphabet; class 0 is the CTC blank, class i is ``alphabet[i - 1]``.
Features are cached per split beside the data (``<dir>/.frames/<split>-<key>.npz``, a flat float16 array and the
row lengths), keyed by the dataset's identity and this module's feature version, so a second training run
reads them in a second instead of decoding thousands of PNG or WAV files again.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.batching import to_device
from rnnkit.data.parallel import default_workers, map_jobs
from rnnkit.errors import ConfigError, CorpusError

KINDS = ("handwriting", "speech")
FEATURE_VERSION = 1
PARALLEL_FROM = 500  # files: below this, starting worker processes costs more than it saves


def read_info(root: str | Path) -> dict:
    """The dataset.json of a built recognition dataset, checked by the builder of its kind."""
    path = Path(root) / "dataset.json"
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except FileNotFoundError:
        raise CorpusError(f"{path} not found — build a dataset first: rnnkit data handwriting|speech {root}") from None
    except (OSError, ValueError, AttributeError) as e:
        raise CorpusError(f"{path} cannot be read ({e}) — build the dataset again into a new directory") from None
    if kind not in KINDS:
        raise CorpusError(f"{path} is a {kind!r} dataset, not one for recognition — build one with "
                          "rnnkit data handwriting|speech")
    info = _module(kind).read_dataset(root)
    for key, types in (("alphabet", str), ("splits", dict), ("spec", dict)):  # what training and scoring read
        if not isinstance(info.get(key), types):
            raise CorpusError(f"{path} has no valid {key!r} — the dataset is damaged; build it again into a new "
                              "directory")
    return info


def _module(kind: str):
    if kind == "handwriting":
        from rnnkit.data import handwriting

        return handwriting
    from rnnkit.data import speech

    return speech


def featurizer(info: dict) -> Callable[[str | Path | np.ndarray], np.ndarray]:
    """The function that turns one image or WAV file (or array) of this dataset's kind into float32 (T, C) frames."""
    if info["kind"] == "handwriting":
        from rnnkit.data.handwriting import image_frames

        height = info["spec"]["height"]
        return lambda source: image_frames(source, height)
    from rnnkit.data.audio import wav_frames

    features = info["features"]
    return lambda source: wav_frames(source, **features)


class Alphabet:
    """Characters <-> CTC classes: 0 is the blank, ``i`` is ``chars[i - 1]``."""

    def __init__(self, chars: str) -> None:
        if not chars or len(set(chars)) != len(chars):
            raise ConfigError(f"an alphabet needs distinct characters (got {chars!r})")
        self.chars = chars
        self.index = {c: i + 1 for i, c in enumerate(chars)}

    @property
    def num_classes(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        missing = sorted(set(text) - self.index.keys())
        if missing:
            raise CorpusError(f"characters {''.join(missing)!r} are not in the alphabet — the transcript does not "
                              "belong to this dataset")
        return [self.index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 1] for i in ids if i > 0)


@dataclass
class RecognitionBatch:
    """``x (B, T, C)`` float frames zero-padded, ``lengths (B,)`` on the CPU, ``targets (B, L)`` class ids padded
    with 0 and ``target_lengths (B,)`` (what ``torch.nn.CTCLoss`` takes)."""

    x: Tensor
    lengths: Tensor
    targets: Tensor
    target_lengths: Tensor

    def to(self, device) -> RecognitionBatch:
        return RecognitionBatch(to_device(self.x, device), self.lengths, to_device(self.targets, device),
                                self.target_lengths)


class Utterances:
    """N frame sequences (T_i, C) with their transcripts as class ids; ``batch`` pads them."""

    def __init__(self, frames: Sequence[np.ndarray], labels: Sequence[Sequence[int]], texts: Sequence[str] = (),
                 conditions: Sequence[str] = ()) -> None:
        if len(frames) != len(labels):
            raise ValueError(f"{len(frames)} frame sequences but {len(labels)} transcripts")
        self.frames, self.labels = list(frames), [list(x) for x in labels]
        self.texts, self.conditions = list(texts), list(conditions)
        self.lengths = np.array([len(f) for f in self.frames], dtype=np.int64)
        self.label_lengths = np.array([len(x) for x in self.labels], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def feature_size(self) -> int:
        return int(self.frames[0].shape[1])

    def subset(self, idx) -> Utterances:
        pick = lambda xs: [xs[i] for i in idx] if xs else []  # noqa: E731
        return Utterances(pick(self.frames), pick(self.labels), pick(self.texts), pick(self.conditions))

    def batch(self, indices) -> RecognitionBatch:
        idx = np.asarray(indices, dtype=np.int64)
        T, L = int(self.lengths[idx].max(initial=1)), int(self.label_lengths[idx].max(initial=1))
        x = np.zeros((len(idx), T, self.feature_size), dtype=np.float32)
        y = np.zeros((len(idx), max(L, 1)), dtype=np.int64)
        for row, i in enumerate(idx):
            x[row, :self.lengths[i]] = self.frames[i]
            y[row, :self.label_lengths[i]] = self.labels[i]
        return RecognitionBatch(torch.from_numpy(x), torch.from_numpy(self.lengths[idx].copy()), torch.from_numpy(y),
                                torch.from_numpy(self.label_lengths[idx].copy()))

    def batches(self, batch_size: int) -> Iterator[RecognitionBatch]:
        """All utterances in order (evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(np.arange(start, min(start + batch_size, len(self))))

    def length_batches(self, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
        from rnnkit.data.batching import length_buckets

        return length_buckets([self.lengths], batch_size, seed, epoch)


def transcripts(root: str | Path, split: str) -> list[str]:
    """The texts of a split, without reading its images or audio (a language model's training text)."""
    return [row[1] for row in _module(read_info(root)["kind"]).read_split(root, split)]


def lm_sentences(root: str | Path, path: str | Path) -> list[str]:
    """The sentences of the text file ``path`` in the training part of the dataset's text split (the rule that
    built the dataset, by checksum of each sentence): more text for a language model, none of it held out."""
    info = read_info(root)
    return _module(info["kind"]).training_sentences(info, path)


def lm_lines(root: str | Path, corpus: str | Path | None = None, seed: int = 0) -> list[str]:
    """What a character language model for the dataset in ``root`` may read, one sentence per line: the sentences
    of ``corpus`` in the training part of the dataset's text split (``lm_sentences``) and the training
    transcripts, each once, in an order shuffled by ``seed`` (a language model holds out the tail of its text)."""
    lines = [*(lm_sentences(root, corpus) if corpus else []), *transcripts(root, "train")]
    lines = list(dict.fromkeys(line for line in (x.strip() for x in lines) if line))
    order = np.random.default_rng(seed).permutation(len(lines))
    return [lines[i] for i in order]


@dataclass
class RecognitionData:
    """A recognition dataset read for training or evaluation: its ``info`` (dataset.json), ``alphabet`` and splits."""

    root: Path
    info: dict
    alphabet: Alphabet
    splits: dict[str, Utterances]

    @property
    def kind(self) -> str:
        return self.info["kind"]


def load_recognition(root: str | Path, splits: Sequence[str] = ("train", "val"), limit: int | None = None,
                     progress: bool = False, workers: int | None = None) -> RecognitionData:
    """Read ``splits`` of the dataset in ``root``; ``limit`` keeps the first N training utterances (quick runs).
    Files not yet in the feature cache are read by ``workers`` processes (default: one per core, from
    ``PARALLEL_FROM`` files up; the frames are the same whatever the number)."""
    root = Path(root)
    info = read_info(root)
    alphabet = Alphabet(info["alphabet"])
    reader = _module(info["kind"]).read_split
    out = {}
    for split in splits:
        rows = reader(root, split)[:limit] if limit and split == "train" else reader(root, split)
        if not rows:
            raise CorpusError(f"the {split} split of {root} is empty — build the dataset with more lines")
        frames = _cached_frames(root, info, split, [r[0] for r in rows], progress, workers)
        out[split] = Utterances(frames, [alphabet.encode(r[1]) for r in rows], [r[1] for r in rows],
                                [r[2] for r in rows])
    return RecognitionData(root, info, alphabet, out)


def _frames_of(info: dict, path: Path) -> np.ndarray:
    return featurizer(info)(path).astype(np.float16)


def _cached_frames(root: Path, info: dict, split: str, files: list[Path], progress: bool,
                   workers: int | None = None) -> list[np.ndarray]:
    key = hashlib.sha256(json.dumps([FEATURE_VERSION, info.get("spec"), info.get("features"), split,
                                     [f.name for f in files]], sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = root / ".frames" / f"{split}-{key}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                flat, lengths = z["frames"], z["lengths"]
            return [a.astype(np.float32) for a in np.split(flat, np.cumsum(lengths)[:-1])]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache is rebuilt below
    if workers is None:
        workers = default_workers() if len(files) >= PARALLEL_FROM else 1
    needs = {k: info[k] for k in ("kind", "spec", "features") if k in info}  # sent once per chunk of files
    frames = map_jobs(partial(_frames_of, needs), files, workers, progress, desc=f"reading {split}", chunksize=32,
                      start="spawn")
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, frames=np.concatenate(frames), lengths=np.array([len(f) for f in frames]))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only dataset directory: no cache, same frames
    return [f.astype(np.float32) for f in frames]  # the cached precision (float16), on every run
