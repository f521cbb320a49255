"""Labelled sequences for many-to-one tasks: token vocabularies, text files, padded batches, stratified splits.

Shape letters: N examples, B batch, T time (longest sequence in the batch), C features per step.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.batching import to_device
from rnnkit.errors import CorpusError, VocabularyError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1  # their ids in every TokenVocab
TOKENIZERS = ("char", "word", "subword")
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")  # words (with an inner apostrophe: don't, it's) and punctuation marks
SUBWORD_BUCKETS = 1 << 15  # hashed character n-gram rows of a subword vocabulary
SUBWORD_NGRAMS = (3, 5)  # n-gram lengths, taken of "<word>" so the ends of a word are n-grams of their own
SUBWORD_MAX = 40  # ids per word at most: the word itself and its first 39 n-grams


def tokenize(text: str, kind: str) -> list[str]:
    """``char``: every character; ``word`` and ``subword``: lower-cased words and punctuation marks."""
    if kind == "char":
        return list(text)
    if kind in ("word", "subword"):
        return _WORD.findall(text.lower())
    raise VocabularyError(f"unknown tokenizer {kind!r} — use one of {', '.join(TOKENIZERS)}")


class TokenVocab:
    """Tokens to ids with ``<pad>`` = 0 and ``<unk>`` = 1; tokens rarer than ``min_count`` map to ``<unk>``.

    ``subword`` (fastText's idea): each word is also the bag of its character n-grams, hashed into
    ``SUBWORD_BUCKETS`` extra rows, so a word seen once or never still shares what its pieces have learnt ("unwatchable"
    with "watch" and "unbearable"). ``encode`` then returns ``(T, K)`` ids per text — the word's id and its n-grams'
    ids, 0-padded — and the encoder averages their embeddings into one vector per word.
    """

    def __init__(self, tokens: Sequence[str], kind: str) -> None:
        if kind not in TOKENIZERS:
            raise VocabularyError(f"unknown tokenizer {kind!r} — use one of {', '.join(TOKENIZERS)}")
        self.kind = kind
        self.tokens = [PAD, UNK, *(t for t in tokens if t not in (PAD, UNK))]
        self._index = {t: i for i, t in enumerate(self.tokens)}
        self.buckets = SUBWORD_BUCKETS if kind == "subword" else 0

    @classmethod
    def build(cls, texts: Iterable[str], kind: str, min_count: int = 1) -> TokenVocab:
        counts = Counter(t for text in texts for t in tokenize(text, kind))
        return cls(sorted(t for t, n in counts.items() if n >= min_count), kind)

    def __len__(self) -> int:
        """Embedding rows: the tokens, and the n-gram buckets of a subword vocabulary."""
        return len(self.tokens) + self.buckets

    def encode(self, text: str) -> np.ndarray:
        """Ids ``(T,)`` — or ``(T, K)`` for subword: each word's id then its n-grams' ids, 0-padded."""
        words = tokenize(text, self.kind)
        if self.kind != "subword":
            return np.array([self._index.get(t, 1) for t in words], dtype=np.int64)
        rows = [[self._index.get(w, 1), *self._ngram_ids(w)][:SUBWORD_MAX] for w in words]
        out = np.zeros((len(rows), max((len(r) for r in rows), default=1)), dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, :len(r)] = r
        return out

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids ``(T,)`` of tokens already split (a tagger's words or characters, kept as they are)."""
        return np.array([self._index.get(t, UNK_ID) for t in tokens], dtype=np.int64)

    def _ngram_ids(self, word: str) -> list[int]:
        marked = f"<{word}>"
        lo, hi = SUBWORD_NGRAMS
        grams = [marked[i:i + n] for n in range(lo, hi + 1) for i in range(len(marked) - n + 1)]
        # crc32, not hash(): Python salts str hashes per process, and the ids must be the same in every run
        return [len(self.tokens) + zlib.crc32(g.encode("utf-8")) % self.buckets for g in grams if g != marked]

    def to_dict(self) -> dict:
        return {"type": "tokens", "kind": self.kind, "tokens": self.tokens[2:]}

    @classmethod
    def from_dict(cls, d: dict) -> TokenVocab:
        if d.get("type") != "tokens" or not isinstance(d.get("tokens"), list):
            raise VocabularyError("config.json holds no token vocabulary — the checkpoint is damaged")
        return cls(d["tokens"], d.get("kind", ""))


# -- labelled text files -------------------------------------------------------------------------------------
def read_labeled_texts(path: str | Path) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` from a ``text<TAB>label`` file, or from a folder of ``<label>.txt`` files (one example
    per line), or from a list of such files. Quotes are plain characters; CRLF line ends are fine."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".txt" and not p.name.startswith("."))
        if not files:
            raise CorpusError(f"{path} holds no .txt files — one file per class, e.g. English.txt, French.txt")
        texts, labels = [], []
        for f in files:
            lines = [ln for ln in read_lines(f) if ln.strip()]
            texts += lines
            labels += [f.stem] * len(lines)
        if len(set(labels)) < 2:
            raise CorpusError(f"{path} holds one class only — a classifier needs at least two files with examples")
        return texts, labels
    if not path.exists():
        raise CorpusError(f"{path} does not exist — pass a text<TAB>label file or a folder of <label>.txt files")
    texts, labels = [], []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        text, tab, label = line.rpartition("\t")
        if not tab or not label.strip() or not text.strip():
            raise CorpusError(f"{path}:{n} is not 'text<TAB>label' — every line needs a text, a tab and a label")
        texts.append(text.strip())
        labels.append(label.strip())
    if len(set(labels)) < 2:
        raise CorpusError(f"{path} holds fewer than two labels — a classifier needs at least two classes")
    return texts, labels


def read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {path} ({e.strerror}) — check the path and its permissions") from None
    if b"\0" in data:
        raise CorpusError(f"{path} is binary (it contains NUL bytes) — pass a UTF-8 text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 (bad byte at offset {e.start}) — convert it to UTF-8") from None
    return [ln.rstrip("\r") for ln in text.split("\n")]


# -- examples and batches ------------------------------------------------------------------------------------
@dataclass
class Batch:
    x: Tensor  # (B, T) int64 token ids, or (B, T, C) float32; zero past each length
    lengths: Tensor  # (B,) int64
    y: Tensor  # (B,) int64 class ids, or (B, ...) float32 targets

    def to(self, device: torch.device) -> Batch:
        return Batch(to_device(self.x, device), self.lengths, to_device(self.y, device))


class Examples:
    """N variable-length sequences with one target each; ``batch(indices)`` pads them to a Batch."""

    def __init__(self, inputs: Sequence[np.ndarray], targets: np.ndarray) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if any(len(s) == 0 for s in inputs):
            raise CorpusError("an example is empty (no tokens or steps) — remove it or check the tokenizer")
        self.inputs, self.targets = list(inputs), np.asarray(targets)

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: Sequence[int]) -> Examples:
        return Examples([self.inputs[i] for i in indices], self.targets[np.asarray(indices, dtype=np.int64)])

    def batch(self, indices: Sequence[int]) -> Batch:
        seqs = [torch.from_numpy(np.asarray(self.inputs[i])) for i in indices]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        if seqs[0].dim() == 2:  # subword ids (T_i, K_i): K differs between texts, pad it with 0 (<pad>) too
            width = max(s.shape[1] for s in seqs)
            seqs = [torch.nn.functional.pad(s, (0, width - s.shape[1])) for s in seqs]
        x = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # (B, T), (B, T, K) or (B, T, C)
        return Batch(x, lengths, torch.from_numpy(self.targets[np.asarray(indices, dtype=np.int64)]))

    def batches(self, batch_size: int) -> Iterable[Batch]:
        """In order, for evaluation; sorted by length inside the call would reorder predictions, so it is not."""
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))))


def stratified_split(labels: Sequence, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, heldout_idx)``: about ``fraction`` of each class held out (at least one example of every class
    with two or more), chosen by a seeded permutation; both sorted."""
    if not 0.0 < fraction < 1.0:
        raise CorpusError(f"the held-out fraction must be in (0, 1) (got {fraction})")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        k = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        held.append(rng.permutation(idx)[:k])
    heldout = np.sort(np.concatenate(held)).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels)), heldout)
    return train, heldout
