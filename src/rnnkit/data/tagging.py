"""A tagging dataset (one tag per step) from its source, split train / validation / test.

Two kinds of source:

- ``conll``: a CoNLL-style file, one token per line (``token<TAB>tag``, or more tab- or space-separated columns:
  the first is the token, the last the tag; CoNLL-U's FORM and UPOS are columns 2 and 4, see ``--token-column`` /
  ``--tag-column``), a blank line between sentences, comment lines (in a tab-separated file: ``#`` and no tab,
  before a sentence) and CoNLL-U's multiword ranges skipped. Part-of-speech, chunk and named-entity corpora come
  this way.
- ``spaces`` and ``case``: tasks derived from plain text, one sentence a line (the first tab-separated field, so the
  English side of a Tatoeba pair file): ``spaces`` reads the characters with the spaces taken out and tags each one
  with whether a word ends after it (word segmentation); ``case`` reads the lower-cased characters and tags each one
  with whether it was upper case (truecasing). The labels come from the text itself, so any text is training data.

Duplicate sentences are dropped before the split (a Tatoeba sentence with three translations would otherwise sit in
training and test at once). The split is a seeded permutation saved in config.json with the file's sha256, so
``eval`` rebuilds exactly the test sentences the model never saw.

Shape letters: N sentences, B batch, T steps (the longest sentence in the batch).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnkit.data.datasets import sha256_file
from rnnkit.data.labeled import Batch, Examples, TokenVocab, read_lines
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import CorpusError

TASKS = ("conll", "spaces", "case")
#: the tags of the derived tasks: spaces — "_" a word ends after this character, "-" it goes on; case — "U" upper
#: case, "-" not
DERIVED_TAGS = {"spaces": ["-", "_"], "case": ["-", "U"]}


@dataclass
class TaggingSpec:
    """Where the sentences come from and how they are split; saved as the ``data`` section of config.json."""

    path: str
    task: str = "conll"
    token_column: int = 1  # conll: 1-based column of the token
    tag_column: int = 0  # conll: 1-based column of the tag; 0 = the last
    max_sentences: int = 0  # 0: all; else this many distinct sentences, drawn by the split's permutation
    min_count: int = 1  # conll: rarer words become <unk>
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    split_seed: int = 0
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            raise CorpusError("no data given — pass --data PATH: a CoNLL file (token<TAB>tag lines) or, with "
                              "--task spaces|case, a text file of sentences")
        if self.task not in TASKS:
            raise CorpusError(f"unknown --task {self.task!r} — use one of {', '.join(TASKS)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise CorpusError(f"--test-fraction must be in (0, 1) (got {self.test_fraction}) — e.g. 0.1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CorpusError(f"--val-fraction must be in [0, 1) (got {self.val_fraction}) — e.g. 0.1; 0 trains on "
                              "all of the training part and keeps the final weights")
        if self.min_count < 1:
            raise CorpusError(f"--min-count must be >= 1 (got {self.min_count}) — 1 keeps every word")
        if self.max_sentences < 0:
            raise CorpusError(f"--max-sentences must be >= 0 (got {self.max_sentences}) — 0 takes them all")
        if self.token_column < 1 or self.tag_column < 0:
            raise CorpusError(f"--token-column must be >= 1 and --tag-column >= 0 (got {self.token_column}, "
                              f"{self.tag_column}) — columns count from 1; tag column 0 is the last")
        path = Path(self.path)
        if path.is_dir():
            raise CorpusError(f"{self.path} is a directory — pass a file")
        self.path = str(path.resolve()) if path.exists() else self.path

    @property
    def tokens(self) -> str:
        """``word`` for CoNLL tokens, ``char`` for the derived tasks."""
        return "word" if self.task == "conll" else "char"


class TaggedExamples(Examples):
    """N sequences with one target per step; ``batch`` pads the targets with ``IGNORE_INDEX``."""

    def __init__(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> None:
        if len(inputs) != len(targets) or any(len(x) != len(y) for x, y in zip(inputs, targets, strict=False)):
            raise ValueError("every sequence needs exactly one target per step")
        if any(len(s) == 0 for s in inputs):
            raise CorpusError("a sentence is empty (no tokens) — remove it")
        self.inputs, self.targets = list(inputs), list(targets)

    def subset(self, indices: Sequence[int]) -> TaggedExamples:
        return TaggedExamples([self.inputs[i] for i in indices], [self.targets[i] for i in indices])

    def batch(self, indices: Sequence[int]) -> Batch:
        x = [torch.from_numpy(np.asarray(self.inputs[i])) for i in indices]
        y = [torch.from_numpy(np.asarray(self.targets[i])) for i in indices]
        lengths = torch.tensor([len(s) for s in x], dtype=torch.int64)
        pad = torch.nn.utils.rnn.pad_sequence
        return Batch(pad(x, batch_first=True), lengths, pad(y, batch_first=True, padding_value=IGNORE_INDEX))


@dataclass
class TaggingData:
    train: TaggedExamples
    val: TaggedExamples
    test: TaggedExamples
    tags: list[str]
    vocab: TokenVocab
    test_tokens: list[list[str]]  # the test sentences' tokens (words, or characters as the model reads them)
    train_tokens: list[list[str]]  # the training part's (train then validation), for the baselines
    description: str


# -- reading -------------------------------------------------------------------------------------------------
def read_conll(path: str | Path, token_column: int = 1, tag_column: int = 0) -> list[tuple[list[str], list[str]]]:
    """``[(tokens, tags), ...]`` from a CoNLL-style file (see the module docstring). In a tab-separated file, a line
    that starts with ``#`` and holds no tab, before a sentence's first token, is a comment (``#<TAB>#`` is the Penn
    Treebank's pound sign, a token); a space-separated file (CoNLL-2000, -2003) has no comments, so ``# # B-NP`` is a
    token line. CoNLL-U's multiword-token ranges (``2-3``) and empty nodes (``4.1``) are skipped, as their words
    are on the lines that follow."""
    if token_column == tag_column:
        raise CorpusError(f"--token-column and --tag-column are both {token_column} — the tag needs a column of its "
                          "own")
    sentences, tokens, tags, width = [], [], [], None
    lines = read_lines(Path(path))
    tabbed = any("\t" in line for line in lines)  # comments exist in tab-separated files (CoNLL-U) only
    for n, line in enumerate(lines, 1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        if tabbed and line.startswith("#") and not tokens and "\t" not in line:
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) >= 10 and re.fullmatch(r"\d+[-.]\d+", cols[0]):  # a CoNLL-U range or empty node
            continue
        need = max(token_column, tag_column, 2)
        if len(cols) < need:
            raise CorpusError(f"{path}:{n} has {len(cols)} column(s), a CoNLL line needs {need} (token<TAB>tag) — "
                              "fix that line, or pass --task spaces|case for plain text")
        if not tag_column and len(cols) != (width := width or len(cols)):
            raise CorpusError(f"{path}:{n} has {len(cols)} columns where earlier lines have {width}, so 'the last' "
                              "is not one column — pass --tag-column N")
        if not tag_column and token_column == len(cols):
            raise CorpusError(f"--token-column {token_column} is the last column, where the tag is read by default "
                              "— pass --tag-column N")
        token, tag = cols[token_column - 1].strip(), cols[tag_column - 1 if tag_column else -1].strip()
        if not token or not tag:
            raise CorpusError(f"{path}:{n} has an empty token or tag — fix that line")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def read_sentences(path: str | Path) -> list[str]:
    """The non-empty lines of a text file (the first tab-separated field of each), whitespace runs made one space."""
    return [s for s in (" ".join(line.split("\t")[0].split()) for line in read_lines(Path(path))) if s]


def derive(sentence: str, task: str) -> tuple[list[str], list[str]]:
    """The characters a derived task's model reads and their tags (``DERIVED_TAGS``)."""
    if task == "spaces":
        words = sentence.split(" ")
        chars = [c for w in words for c in w]
        tags = [t for w in words for t in ["-"] * (len(w) - 1) + ["_"]]
        return chars, tags
    lowered = [c.lower() if len(c.lower()) == 1 else c for c in sentence]  # "İ".lower() is two characters
    return lowered, ["U" if c != low else "-" for c, low in zip(sentence, lowered, strict=True)]


def render(tokens: Sequence[str], tags: Sequence[str], task: str) -> str:
    """A derived task's output as text (spaces put back, or letters upper-cased); ``token/TAG`` pairs for CoNLL."""
    if task == "spaces":
        return "".join(c + (" " if t == "_" else "") for c, t in zip(tokens, tags, strict=True)).rstrip(" ")
    if task == "case":
        return "".join(c.upper() if t == "U" else c for c, t in zip(tokens, tags, strict=True))
    return " ".join(f"{w}/{t}" for w, t in zip(tokens, tags, strict=True))


def input_tokens(text: str, task: str) -> list[str]:
    """What the model reads for a user's text: whitespace-split words (CoNLL), or its characters with the spaces
    taken out (spaces) or lower-cased (case)."""
    if task == "conll":
        return text.split()
    return derive(" ".join(text.split()), task)[0]


# -- loading -------------------------------------------------------------------------------------------------
def load_tagging(spec: TaggingSpec, vocab: TokenVocab | None = None, tags: list[str] | None = None,
                 verify: bool = False) -> TaggingData:
    """Build the three splits. ``vocab`` / ``tags`` from a saved run are reused; ``verify`` checks that the file
    is the one the run was trained on (sha256)."""
    path = Path(spec.path)
    if not path.is_file():
        raise CorpusError(f"{spec.path} does not exist — pass a CoNLL file or, with --task spaces|case, a text file")
    digest = sha256_file(path)
    if verify and spec.sha256 and digest != spec.sha256:
        raise CorpusError(f"{spec.path} changed since the run was trained — restore it, or train a new run")
    spec.sha256 = digest
    if spec.task == "conll":
        sentences = read_conll(path, spec.token_column, spec.tag_column)
    else:
        sentences = [derive(s, spec.task) for s in read_sentences(path)]
    distinct: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
    for toks, tg in sentences:  # each distinct sentence once, with its first occurrence's tags, in file order
        distinct.setdefault(tuple(toks), (toks, tg))
    sentences = list(distinct.values())
    if len(sentences) < 3:
        raise CorpusError(f"{spec.path} holds {len(sentences)} distinct sentence(s) — training, validation and test "
                          "need at least three")
    order = np.random.default_rng(spec.split_seed).permutation(len(sentences))
    if spec.max_sentences:
        if spec.max_sentences < 3:
            raise CorpusError(f"--max-sentences {spec.max_sentences} leaves no room for training, validation and "
                              "test — pass at least 3 (0 takes them all)")
        order = order[:spec.max_sentences]
    n_test = max(1, round(spec.test_fraction * len(order)))
    n_val = round(spec.val_fraction * (len(order) - n_test)) if spec.val_fraction else 0
    if spec.val_fraction and n_val == 0:
        raise CorpusError(f"--val-fraction {spec.val_fraction} holds out no sentence — pass more data, or "
                          "--val-fraction 0 to train without validation")
    if len(order) - n_test - n_val < 1:
        raise CorpusError(f"{len(order)} sentence(s) leave none to train on — pass more data or smaller fractions")
    test_idx, val_idx, fit_idx = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    if tags is None:  # every tag of the sentences used, so a rare tag the training part lacks is still scored
        tags = DERIVED_TAGS[spec.task] if spec.task != "conll" else sorted({t for i in order for t in sentences[i][1]})
    if len(tags) < 2:
        raise CorpusError(f"{spec.path} uses one tag only ({tags[0]!r}) — a tagger needs at least two")
    tag_id = {t: i for i, t in enumerate(tags)}
    unknown = sorted({t for i in order for t in sentences[i][1]} - set(tag_id))
    if unknown:
        raise CorpusError(f"{spec.path} uses tags {unknown[:5]} that are not among the run's {len(tags)} — pass the "
                          "data the run was trained on")
    if vocab is None:
        counts = Counter(t for i in fit_idx for t in sentences[i][0])
        vocab = TokenVocab(sorted(t for t, c in counts.items() if c >= spec.min_count), spec.tokens)

    def examples(idx) -> TaggedExamples:
        return TaggedExamples([vocab.ids(sentences[i][0]) for i in idx],
                              [np.array([tag_id[t] for t in sentences[i][1]], dtype=np.int64) for i in idx])

    steps = sum(len(sentences[i][0]) for i in order)
    return TaggingData(
        examples(fit_idx), examples(val_idx), examples(test_idx), tags, vocab,
        [sentences[i][0] for i in test_idx], [sentences[i][0] for i in (*fit_idx, *val_idx)],
        f"{spec.path}: {len(order):,} distinct sentences ({steps:,} {spec.tokens} steps), task {spec.task}, "
        f"{len(tags)} tags, {len(vocab.tokens):,} {spec.tokens} types in the vocabulary")
