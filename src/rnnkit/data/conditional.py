"""One-to-many data: (condition, token sequence) pairs, their vocabulary, batches and splits.

Three kinds of source, each a function of a spec saved in config.json so that ``eval`` rebuilds the same splits:
- a folder of ``<label>.txt`` files or a ``text<TAB>label`` file (e.g. names by language): the label conditions
  the characters of the text;
- ``digits``: scikit-learn's 1,797 8x8 images of digits; the 64 pixels condition the digit's English word;
- ``bach-chorales``: the chorales shipped with music21; the mode (major/minor) conditions the melody tokens.

Every sequence is framed by one boundary token ``<s>`` (id 0): the model reads ``<s> t1 .. tn`` and predicts
``t1 .. tn <s>``, so predicting the end is part of the loss, and a sampler stops when it draws ``<s>``.
Shape letters: N examples, B batch, T time (longest sequence in the batch + 1), F condition features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.batching import to_device
from rnnkit.data.datasets import sha256_file
from rnnkit.data.labeled import read_labeled_texts, stratified_split
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError, CorpusError, VocabularyError

BOUNDARY = "<s>"
DIGITS, CHORALES = "digits", "bach-chorales"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class SequenceVocab:
    """Tokens to ids, with the boundary ``<s>`` as id 0."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = [BOUNDARY, *(t for t in tokens if t != BOUNDARY)]
        self._index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]]) -> SequenceVocab:
        return cls(sorted({t for s in sequences for t in s}))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        unknown = [t for t in tokens if t not in self._index]
        if unknown:
            raise VocabularyError(f"{unknown[0]!r} is not in the model's vocabulary — use tokens the model was "
                                  f"trained on (e.g. {', '.join(map(repr, self.tokens[1:6]))})")
        return np.array([self._index[t] for t in tokens], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to (not including) the first boundary."""
        out = []
        for i in ids:
            if i == 0:
                break
            out.append(self.tokens[i])
        return out

    def to_dict(self) -> dict:
        return {"type": "sequence", "tokens": self.tokens[1:]}

    @classmethod
    def from_dict(cls, d: dict) -> SequenceVocab:
        if d.get("type") != "sequence" or not isinstance(d.get("tokens"), list):
            raise VocabularyError("config.json holds no sequence vocabulary — the checkpoint is damaged")
        return cls(d["tokens"])


@dataclass
class ConditionedBatch:
    x: Tensor  # (B, T) <s> then the tokens; 0 past each length
    y: Tensor  # (B, T) the tokens then <s>; IGNORE_INDEX past each length
    lengths: Tensor  # (B,) int64, tokens + 1
    condition: Tensor  # (B,) int64 class ids, or (B, F) float32 features

    def to(self, device: torch.device) -> ConditionedBatch:
        return ConditionedBatch(to_device(self.x, device), to_device(self.y, device), self.lengths,
                                to_device(self.condition, device))


class ConditionedSequences:
    """N token sequences, each with its condition; ``batch(indices)`` frames and pads them."""

    def __init__(self, sequences: Sequence[np.ndarray], conditions: np.ndarray) -> None:
        if len(sequences) != len(conditions):
            raise ValueError(f"{len(sequences)} sequences but {len(conditions)} conditions")
        self.sequences, self.conditions = list(sequences), np.asarray(conditions)

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, indices: Sequence[int]) -> ConditionedSequences:
        idx = np.asarray(indices, dtype=np.int64)
        return ConditionedSequences([self.sequences[i] for i in idx], self.conditions[idx])

    def batch(self, indices: Sequence[int]) -> ConditionedBatch:
        idx = np.asarray(indices, dtype=np.int64)
        lengths = torch.tensor([len(self.sequences[i]) + 1 for i in idx], dtype=torch.int64)
        x = torch.zeros(len(idx), int(lengths.max()), dtype=torch.int64)
        y = torch.full_like(x, IGNORE_INDEX)
        for row, i in enumerate(idx):
            s = torch.from_numpy(self.sequences[i])
            x[row, 1:len(s) + 1] = s
            y[row, :len(s)] = s
            y[row, len(s)] = 0
        return ConditionedBatch(x, y, lengths, torch.from_numpy(self.conditions[idx]))

    def batches(self, batch_size: int) -> Iterable[ConditionedBatch]:
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))))

    def num_targets(self) -> int:
        """Predicted tokens: every token and each sequence's end."""
        return sum(len(s) + 1 for s in self.sequences)


@dataclass
class GenerationSpec:
    """Where the pairs come from and how they are split; saved as the ``data`` section of config.json."""

    source: str  # a folder of <label>.txt, a text<TAB>label file, "digits" or "bach-chorales"
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    split_seed: int = 0
    limit: int | None = None  # bach-chorales: the first N chorales only (a quick try)
    sha256: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limit is not None and (self.source != CHORALES or self.limit < 10):
            raise CorpusError(f"--limit takes the first N >= 10 chorales of {CHORALES} (got {self.limit} with "
                              f"{self.source}) — drop it to use all the data")
        for name in ("test_fraction", "val_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise CorpusError(f"--{name.replace('_', '-')} must be in (0, 1) (got {getattr(self, name)}) — e.g. "
                                  "0.1 holds out a tenth of every label")
        if self.source not in (DIGITS, CHORALES):
            path = Path(self.source)
            if not path.exists():
                raise CorpusError(f"{self.source} does not exist — pass a folder of <label>.txt files, a "
                                  f"text<TAB>label file, {DIGITS} or {CHORALES}")
            self.source = str(path.resolve())

    @property
    def kind(self) -> str:
        return {DIGITS: "digits", CHORALES: "music"}.get(self.source, "text")


@dataclass
class GenerationData:
    train: ConditionedSequences
    val: ConditionedSequences
    test: ConditionedSequences
    vocab: SequenceVocab
    classes: list[str] | None  # label conditions
    condition_size: int  # feature conditions: F
    image_shape: list[int] | None
    scaling: tuple[np.ndarray, np.ndarray] | None  # features: mean, std of the training part
    test_names: list[str]  # what each test example is (a name's label, an image index, a chorale)
    description: str
    extra: dict = field(default_factory=dict)  # per-source: test images for digits, test melodies for music
    kind: str = "text"  # GenerationSpec.kind: text, digits or music


def load_generation(spec: GenerationSpec, vocab: SequenceVocab | None = None, classes: list[str] | None = None,
                    verify: bool = False) -> GenerationData:
    """The three splits of ``spec``; ``vocab`` and ``classes`` of a saved run are reused, ``verify`` refuses files
    that changed since the run was trained."""
    if spec.kind == "text":
        path = Path(spec.source)
        files = sorted(f for f in path.iterdir() if f.suffix == ".txt") if path.is_dir() else [path]
        sums = {str(f): sha256_file(f) for f in files}
        if verify and spec.sha256 and sums != spec.sha256:
            raise CorpusError(f"the data changed since the run was trained ({spec.source}) — restore it, or train "
                              "a new run")
        spec.sha256 = sums
        return _load_labeled(spec, vocab, classes)
    if spec.kind == "digits":
        return _load_digits(spec, vocab)
    return _load_chorales(spec, vocab)


def _splits(labels: Sequence, spec: GenerationSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rest, test = stratified_split(labels, spec.test_fraction, spec.split_seed)
    fit, val = stratified_split(np.asarray(labels)[rest], spec.val_fraction, spec.split_seed + 1)
    return rest[fit], rest[val], test


def _assemble(seqs: list[list[str]], conditions: np.ndarray, parts, vocab: SequenceVocab | None):
    fit, val, test = parts
    # a closed vocabulary: a held-out token that training never saw keeps its (untrained) row, so every held-out
    # sequence is scored, at whatever cost the model gives it
    vocab = vocab or SequenceVocab.build(seqs)
    encoded = [vocab.encode(s) for s in seqs]
    allseq = ConditionedSequences(encoded, conditions)
    return allseq.subset(fit), allseq.subset(val), allseq.subset(test), vocab


def _load_labeled(spec: GenerationSpec, vocab, classes) -> GenerationData:
    texts, labels = read_labeled_texts(spec.source)
    classes = classes or sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    if set(labels) - set(index):
        raise CorpusError(f"labels {sorted(set(labels) - set(index))[:5]} are not among the run's labels — "
                          "restore the data the run was trained on, or train a new run")
    y = np.array([index[x] for x in labels], dtype=np.int64)
    parts = _splits(labels, spec)
    seqs = [list(t.strip()) for t in texts]
    train, val, test, vocab = _assemble(seqs, y, parts, vocab)
    return GenerationData(train, val, test, vocab, classes, 0, None, None, [labels[i] for i in parts[2]],
                          f"{spec.source}: {len(texts):,} texts, {len(classes)} labels, {len(vocab) - 1} characters",
                          {"test_texts": [texts[i] for i in parts[2]]})


def _load_digits(spec: GenerationSpec, vocab) -> GenerationData:
    """scikit-learn's digits; the test part is ``train_test_split(stratify=y, test_size, random_state=split_seed)``
    exactly as a scikit-learn user would hold it out, so classifiers scored on that split compare directly."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ConfigError("the digits dataset ships with scikit-learn — pip install 'rnnkit[classical]'") from None
    digits = load_digits()
    images, y = digits.data.astype(np.float32), digits.target
    rest, test = train_test_split(np.arange(len(y)), test_size=spec.test_fraction, stratify=y,
                                  random_state=spec.split_seed % 2**32)  # scikit-learn takes 32-bit seeds
    fit, val = stratified_split(y[rest], spec.val_fraction, spec.split_seed + 1)
    parts = (np.sort(rest[fit]), np.sort(rest[val]), np.sort(test))
    seqs = [list(DIGIT_WORDS[d]) for d in y]
    train, val, test_seq, vocab = _assemble(seqs, images, parts, vocab)
    # one mean and deviation for every pixel (not one per pixel): a border pixel that is blank in every training
    # image would otherwise turn a test image's stray ink into a huge input
    fitted = images[parts[0]]
    scaling = (np.full(64, fitted.mean(), dtype=np.float32), np.full(64, fitted.std(), dtype=np.float32))
    return GenerationData(train, val, test_seq, vocab, None, 64, [8, 8], scaling,
                          [f"digits[{i}]" for i in parts[2]],
                          f"scikit-learn digits: {len(y):,} 8x8 images captioned with their English word",
                          {"test_index": parts[2], "train_images": images[np.sort(rest)],
                           "train_digits": y[np.sort(rest)], "test_images": images[parts[2]],
                           "test_digits": y[parts[2]]}, "digits")


def _load_chorales(spec: GenerationSpec, vocab) -> GenerationData:
    from rnnkit.data.music import load_chorales

    melodies = load_chorales(spec.limit)
    modes = [m.mode for m in melodies]
    classes = ["major", "minor"]
    y = np.array([classes.index(m) for m in modes], dtype=np.int64)
    parts = _splits(modes, spec)
    train, val, test, vocab = _assemble([m.tokens for m in melodies], y, parts, vocab)
    return GenerationData(train, val, test, vocab, classes, 0, None, None,
                          [melodies[i].name for i in parts[2]],
                          f"Bach chorales (music21 corpus): {len(melodies)} soprano melodies, "
                          f"{len(vocab) - 1} tokens",
                          {"test_melodies": [melodies[i] for i in parts[2]]}, "music")
