"""Sentence pairs for translation (Tatoeba ``English<TAB>Spanish``, Spanish -> English): split, tokenised, batched.

The split is a function of the Spanish sentence alone (crc32 of its normalised, lower-cased form), so all the
translations of one Spanish sentence land in the same part and no test sentence is trained on, whatever the other
settings. Both kinds of tokens read text through one word splitter: ``¿`` ``¡`` and every punctuation mark are words
of their own, an inner apostrophe starts a word (``I'm`` -> ``i 'm``, ``Tom's`` -> ``tom 's``), an inner hyphen
becomes the joiner ``@-@``; ``decode`` glues them back into ordinary text, which is what sacreBLEU scores.
``word``: the ``vocab_size`` most frequent words of each side's training part, the rest ``<unk>``; ``bpe``: those words
cut into subwords by a ``tokenizers`` BPE model trained on the training part (punctuation never merges with letters;
a piece that starts a word starts with ``▁``). Shapes: B batch, S source time, T target time (longest target + 1).
"""

from __future__ import annotations

import re
import time
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.batching import to_device
from rnnkit.data.datasets import sha256_file
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError, CorpusError

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
TOKENS = ("word", "bpe")
SCHEME = 1  # version of the word splitter, saved with each tokenizer
JOINER = "@-@"  # an inner hyphen (rock-and-roll), glued to both neighbours on decoding
MARK = "\u2581"  # bpe: '▁', the start of a word (SentencePiece's mark)
_ODD = re.compile("[\u2018\u2019\u201c\u201d\u200b\ufeff]")
_ODD_AS = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u200b": "", "\ufeff": ""}
_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
# whole: the joiner, 3,000 7:30 20/20, p.m. U.S.; a word; an inner apostrophe and what follows; any other mark
_WORD = re.compile(r"@-@|\d+(?:[.,:/]\d+)+|(?<!\w)(?:[^\W\d_]\.){2,}|(?<=\w)'\w+|\w+|[^\w\s]")
_NO_SPACE_BEFORE = set(".,;:?!%)]}»…°")
_NO_SPACE_AFTER = set("¿¡([{«")
_CURRENCY = set("$€£")  # glued to a number that follows ($30), spaced otherwise (30 $)


def normalise(text: str, lowercase: bool = True) -> str:
    """NFC, typographic quotes as ASCII ones, zero-width characters dropped, whitespace runs as one space."""
    text = unicodedata.normalize("NFC", text)
    if _ODD.search(text):
        text = _ODD.sub(lambda m: _ODD_AS[m.group()], text)
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def _split(normalised: str) -> list[str]:
    return _WORD.findall(_HYPHEN.sub(f" {JOINER} ", normalised) if "-" in normalised else normalised)


def split_words(text: str, lowercase: bool = True) -> list[str]:
    """'¿Dónde está la biblioteca?' -> ['¿', 'dónde', 'está', 'la', 'biblioteca', '?']"""
    return _split(normalise(text, lowercase))


def join_words(words: Sequence[str]) -> str:
    """The inverse of ``split_words``: no space before . , ? ! ; : nor after ¿ ¡, ``"`` paired, ``'s`` attached;
    a lone ``'`` opens a quote only where a word cannot precede it (the start, after ¿ ...), else it closes one."""
    out: list[str] = []
    glue, quote_open = True, False  # glue: no space before the next word
    for k, w in enumerate(words):
        if w == JOINER:
            out.append("-")
            glue = True
        elif w == '"':
            out.append(w if glue or quote_open else " " + w)
            glue = quote_open = not quote_open
        else:
            attach = glue or w in _NO_SPACE_BEFORE or w[0] == "'"
            out.append(w if attach else " " + w)
            nxt = words[k + 1][:1] if k + 1 < len(words) else ""
            glue = w in _NO_SPACE_AFTER or (w == "'" and glue) or (w in _CURRENCY and nxt.isdigit())
    return "".join(out)


def _hf():
    try:
        import tokenizers
    except ImportError:
        raise ConfigError("bpe tokens need the tokenizers package — pip install 'rnnkit[translate]', or use "
                          "tokens='word'") from None
    return tokenizers


class Tokenizer:
    """One side's text <-> ids; ids 0-3 are ``<pad> <bos> <eos> <unk>`` in every vocabulary.
    ``word``: ``words`` is the vocabulary; ``bpe``: ``model`` is a ``tokenizers.Tokenizer`` over the same words."""

    def __init__(self, kind: str, lowercase: bool, words: Sequence[str] = (), model=None) -> None:
        self.kind, self.lowercase, self.model = kind, lowercase, model
        self.words = [*SPECIALS, *(w for w in words if w not in SPECIALS)] if model is None else []
        self._index = {w: i for i, w in enumerate(self.words)}
        self._cache: dict[str, list[int]] = {}  # bpe: the ids of each word seen

    @classmethod
    def train(cls, word_lists: Sequence[Sequence[str]], kind: str, vocab_size: int, lowercase: bool) -> Tokenizer:
        """From ``split_words`` of the training texts (already lower-cased if ``lowercase``)."""
        counts = Counter(w for ws in word_lists for w in ws)
        if kind == "word":
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max(vocab_size - len(SPECIALS), 0)]
            return cls(kind, lowercase, [w for w, _ in ranked])
        tk = _hf()
        model = tk.Tokenizer(tk.models.BPE(unk_token=SPECIALS[UNK]))
        model.normalizer = tk.normalizers.Sequence([tk.normalizers.NFC()] + [tk.normalizers.Lowercase()] * lowercase)
        # its input: split_words joined by spaces; every word gets the mark, so a letter is one symbol anywhere
        model.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement=MARK, prepend_scheme="always")
        model.decoder = tk.decoders.Metaspace(replacement=MARK, prepend_scheme="always")
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
        # each distinct word as often as it occurs, a few thousand per string: the same counts, far fewer calls
        stream = [w for w, n in sorted(counts.items()) for _ in range(n)]
        model.train_from_iterator((" ".join(stream[i:i + 4096]) for i in range(0, len(stream), 4096)), trainer)
        return cls(kind, lowercase, model=model)

    def __len__(self) -> int:
        return self.model.get_vocab_size() if self.model else len(self.words)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, without BOS/EOS."""
        return self.encode_words([split_words(text, self.lowercase)])[0]

    def encode_words(self, word_lists: Sequence[Sequence[str]]) -> list[list[int]]:
        if self.model is None:
            get = self._index.get
            return [[get(w, UNK) for w in ws] for ws in word_lists]
        known = self._cache  # bpe: each distinct word is encoded once
        new = sorted({w for ws in word_lists for w in ws if w not in known})
        for w, e in zip(new, self.model.encode_batch(new, add_special_tokens=False), strict=True):
            known[w] = e.ids
        return [[i for w in ws for i in known[w]] for ws in word_lists]

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """The token strings of ``ids`` (labels for an attention plot)."""
        return [self.model.id_to_token(int(i)) if self.model else self.words[int(i)] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first EOS, skipping PAD and BOS; ``<unk>`` stays as a word."""
        content = []
        for i in map(int, ids):
            if i == EOS:
                break
            if i not in (PAD, BOS):
                content.append(i)
        if self.model is None:
            return join_words(self.pieces(content))
        return join_words(self.model.decoder.decode(self.pieces(content)).split())

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "scheme": SCHEME, "lowercase": self.lowercase}
        return d | ({"tokenizer": self.model.to_str()} if self.model else {"words": self.words})

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        if d.get("scheme") != SCHEME or d.get("kind") not in TOKENS:
            raise CorpusError(f"a tokenizer of scheme {d.get('scheme')}, kind {d.get('kind')!r} is not readable by "
                              f"this rnnkit (scheme {SCHEME}) — use the rnnkit version that trained it, or retrain")
        if d["kind"] == "word":
            return cls("word", d["lowercase"], d["words"])
        return cls("bpe", d["lowercase"], model=_hf().Tokenizer.from_str(d["tokenizer"]))


@dataclass
class TranslationBatch:
    src: Tensor  # (B, S) int64, PAD past each length
    src_lengths: Tensor  # (B,) int64
    tgt_in: Tensor  # (B, T) BOS + target ids, PAD past each length
    tgt_out: Tensor  # (B, T) target ids + EOS, IGNORE_INDEX past each length

    def to(self, device) -> TranslationBatch:
        tensors = (self.src, self.src_lengths, self.tgt_in, self.tgt_out)
        return TranslationBatch(*(to_device(t, device) for t in tensors))


class _Ragged:
    """Sequences of ids in one flat array."""

    def __init__(self, seqs: Sequence[Sequence[int]]) -> None:
        self.lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.flat = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(self.lengths.sum()))

    def row(self, i: int) -> list[int]:
        return self.flat[self.starts[i]:self.starts[i] + self.lengths[i]].tolist()

    def padded(self, idx: np.ndarray, width: int, shift: int, fill: int) -> np.ndarray:
        """Rows ``idx`` placed from column ``shift`` in a (B, width) int64 array of ``fill``."""
        t = np.arange(width)[None, :] - shift
        valid = (t >= 0) & (t < self.lengths[idx, None])
        pos = np.where(valid, self.starts[idx, None] + t, 0)
        return np.where(valid, self.flat[pos] if len(self.flat) else 0, fill).astype(np.int64)


class Pairs:
    """N (source ids, target ids) pairs; ``batch`` frames and pads them."""

    def __init__(self, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]]) -> None:
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
        self.src, self.tgt = _Ragged(src), _Ragged(tgt)

    def __len__(self) -> int:
        return len(self.src.lengths)

    def subset(self, idx) -> Pairs:
        idx = np.asarray(idx, dtype=np.int64)
        return Pairs([self.src.row(i) for i in idx], [self.tgt.row(i) for i in idx])

    def num_target_tokens(self) -> int:
        """Target tokens plus one EOS per pair: the positions that count in the loss."""
        return int(self.tgt.lengths.sum()) + len(self)

    def batch(self, indices) -> TranslationBatch:
        idx = np.asarray(indices, dtype=np.int64)
        src_lengths, tgt_lengths = self.src.lengths[idx], self.tgt.lengths[idx]
        width = int(tgt_lengths.max(initial=0)) + 1
        tgt_in = self.tgt.padded(idx, width, 1, PAD)
        tgt_in[:, 0] = BOS
        tgt_out = self.tgt.padded(idx, width, 0, IGNORE_INDEX)
        tgt_out[np.arange(len(idx)), tgt_lengths] = EOS
        src = self.src.padded(idx, int(src_lengths.max(initial=0)), 0, PAD)
        return TranslationBatch(*map(torch.from_numpy, (src, src_lengths.copy(), tgt_in, tgt_out)))

    def batches(self, batch_size: int) -> Iterator[TranslationBatch]:
        """All pairs in order (evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(np.arange(start, min(start + batch_size, len(self))))

    def length_batches(self, batch_size: int, seed: int, epoch: int, chunk_batches: int = 50) -> list[np.ndarray]:
        """Index batches of pairs of similar length: shuffle, sort chunks of ``chunk_batches`` batches by (source,
        target) length, cut them, shuffle the batches. Every pair once; the same for the same (seed, epoch)."""
        from rnnkit.data.batching import length_buckets

        return length_buckets([self.src.lengths, self.tgt.lengths], batch_size, seed, epoch, chunk_batches)

    def padding_waste(self, batches: Iterable[np.ndarray]) -> tuple[float, float]:
        """Shares of padded positions in the source and the target (EOS counted as real) over index ``batches``."""
        cells, real = np.zeros(2), np.zeros(2)
        for b in batches:
            s, t = self.src.lengths[b], self.tgt.lengths[b] + 1
            cells += (len(b) * s.max(), len(b) * t.max())
            real += (s.sum(), t.sum())
        return float(1 - real[0] / cells[0]), float(1 - real[1] / cells[1])


@dataclass
class TranslationSpec:
    """What the pairs are and how they are split and tokenised; saved as the ``data`` section of config.json."""

    path: str
    tokens: str = "word"
    vocab_size: int = 8000
    lowercase: bool = True
    test_percent: int = 5
    val_percent: int = 2
    max_length: int = 60
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.tokens not in TOKENS:
            raise ConfigError(f"unknown tokens {self.tokens!r} — use one of {', '.join(TOKENS)}")
        for name, low in (("vocab_size", 16), ("max_length", 1), ("test_percent", 1), ("val_percent", 1)):
            value = getattr(self, name)
            if type(value) is not int or value < low:
                raise ConfigError(f"{name} must be a whole number >= {low} (got {value!r}) — e.g. "
                                  f"{getattr(TranslationSpec, name)}")
        if self.test_percent + self.val_percent > 50:
            raise ConfigError(f"test_percent + val_percent is {self.test_percent + self.val_percent}, over 50 — "
                              "hold out less, e.g. 5 and 2")
        path = Path(self.path).expanduser()
        path = path / "spa.txt" if (path / "spa.txt").is_file() else path
        if not path.is_file():
            what = "is a directory without spa.txt" if path.is_dir() else "not found"
            raise CorpusError(f"{path} {what} — pass a file of English<TAB>Spanish lines, e.g. spa.txt from "
                              "https://www.manythings.org/anki/spa-eng.zip")
        self.path = str(path.resolve())


@dataclass
class TranslationData:
    train: Pairs
    val: Pairs
    test: Pairs
    src: Tokenizer  # Spanish
    tgt: Tokenizer  # English
    test_sources: list[str]  # raw Spanish of each test pair, in file order
    test_references: list[str]  # raw English of each test pair
    test_groups: list[tuple[str, list[str]]]  # each test Spanish sentence (its first spelling) with all its English
    description: str


def split_of(spanish: str, test_percent: int, val_percent: int) -> int:
    """0 train, 1 validation, 2 test: by crc32 of the normalised, lower-cased sentence."""
    h = zlib.crc32(normalise(spanish).encode("utf-8")) % 100
    return 2 if h < test_percent else 1 if h < test_percent + val_percent else 0


def read_pairs(path: str | Path) -> tuple[list[str], list[str]]:
    """(English, Spanish) of each non-blank line; columns after the second (attribution) are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}) — pass spa.txt as downloaded") from None
    eng, spa = [], []
    for n, line in enumerate(text.splitlines(), 1):
        cols = line.split("\t")
        if len(cols) < 2 or not cols[0].strip() or not cols[1].strip():
            if not line.strip():
                continue
            raise CorpusError(f"{path}:{n}: expected English<TAB>Spanish, got {line[:60]!r} — fix or delete the line")
        eng.append(cols[0].strip())
        spa.append(cols[1].strip())
    if not eng:
        raise CorpusError(f"{path} holds no sentence pairs — pass a file of English<TAB>Spanish lines")
    return eng, spa


def load_translation(spec: TranslationSpec, src: Tokenizer | None = None, tgt: Tokenizer | None = None,
                     verify: bool = False) -> TranslationData:
    """Read, split and tokenise ``spec.path`` (Spanish -> English); tokenizers are trained on the training part
    unless given (a saved run's). ``verify`` refuses a file whose sha256 is not ``spec.sha256``; ``spec.sha256`` is
    then set to the file's."""
    t0 = time.perf_counter()
    digest = sha256_file(Path(spec.path))
    if verify and spec.sha256 and digest != spec.sha256:
        raise CorpusError(f"the data changed since the run was trained ({spec.path} has another sha256) — restore "
                          "it, or train a new run")
    spec.sha256 = digest
    for tok in (src, tgt):
        if tok is not None and (tok.kind, tok.lowercase) != (spec.tokens, spec.lowercase):
            raise ConfigError(f"a {tok.kind} tokenizer with lowercase={tok.lowercase} does not fit tokens="
                              f"{spec.tokens!r}, lowercase={spec.lowercase} — pass the run's own data spec")
    eng, spa = read_pairs(spec.path)
    keys = [normalise(s) for s in spa]
    part = np.array([split_of(k, spec.test_percent, spec.val_percent) for k in keys], dtype=np.int8)
    spa_words = [_split(k) for k in keys] if spec.lowercase else [split_words(s, False) for s in spa]
    eng_words = [split_words(e, spec.lowercase) for e in eng]
    train_idx = np.flatnonzero(part == 0)
    src = src or Tokenizer.train([spa_words[i] for i in train_idx], spec.tokens, spec.vocab_size, spec.lowercase)
    tgt = tgt or Tokenizer.train([eng_words[i] for i in train_idx], spec.tokens, spec.vocab_size, spec.lowercase)
    src_ids, tgt_ids = src.encode_words(spa_words), tgt.encode_words(eng_words)
    short = np.array([max(len(s), len(t)) <= spec.max_length for s, t in zip(src_ids, tgt_ids, strict=True)])
    dropped = int((~short[train_idx]).sum())
    train_idx = train_idx[short[train_idx]]
    val_idx, test_idx = np.flatnonzero(part == 1), np.flatnonzero(part == 2)
    groups: dict[str, tuple[str, list[str]]] = {}
    for i in test_idx:
        groups.setdefault(keys[i], (spa[i], []))[1].append(eng[i])
    splits = [Pairs([src_ids[i] for i in idx], [tgt_ids[i] for i in idx]) for idx in (train_idx, val_idx, test_idx)]
    description = (f"{Path(spec.path).name}: {len(eng):,} Spanish->English pairs; train {len(train_idx):,} "
                   f"({dropped:,} over {spec.max_length} tokens left out), val {len(val_idx):,}, test "
                   f"{len(test_idx):,} ({len(groups):,} distinct Spanish); {spec.tokens} tokens"
                   f"{', lower-cased' if spec.lowercase else ''}, vocabulary es {len(src):,} / en {len(tgt):,}; "
                   f"read in {time.perf_counter() - t0:.1f}s")
    return TranslationData(*splits, src, tgt, [spa[i] for i in test_idx], [eng[i] for i in test_idx],
                           list(groups.values()), description)
