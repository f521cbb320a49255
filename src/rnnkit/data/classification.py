"""A classification dataset from its sources: labelled texts or UEA/UCR series, split train / validation / test.

The split is a function of the sources and a few numbers (fractions, seed) saved in config.json, so ``eval``
rebuilds exactly the test examples the model never saw. The validation examples (for picking the best checkpoint)
come out of the training part, never out of the test part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnkit.data.datasets import sha256_file
from rnnkit.data.labeled import TOKENIZERS, Examples, TokenVocab, read_labeled_texts, stratified_split
from rnnkit.data.series import fit_scaler, load_ts_file, load_uea, shipped_uea_names
from rnnkit.errors import CorpusError


@dataclass
class ClassificationSpec:
    """Where the examples come from and how they are split; saved as the ``data`` section of config.json."""

    sources: list[str]  # text<TAB>label files, folders of <label>.txt, one .ts file, or a shipped UEA name
    test_source: str | None = None  # a separate test file (.ts _TEST files); otherwise a stratified split
    tokens: str = "char"
    min_count: int = 1
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    split_seed: int = 0
    sha256: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sources:
            raise CorpusError("no data given — pass --data PATH (a text<TAB>label file, a folder of <label>.txt "
                              "files, a .ts file) or a dataset name such as japanese_vowels")
        if self.tokens not in TOKENIZERS:
            raise CorpusError(f"unknown --tokens {self.tokens!r} — use one of {', '.join(TOKENIZERS)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise CorpusError(f"--test-fraction must be in (0, 1) (got {self.test_fraction}) — e.g. 0.1 holds out a "
                              "tenth of each class")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CorpusError(f"--val-fraction must be in [0, 1) (got {self.val_fraction}) — e.g. 0.1 holds out a "
                              "tenth of each class; 0 trains on all of it and keeps the final weights")
        if self.min_count < 1:
            raise CorpusError(f"--min-count must be >= 1 (got {self.min_count}) — 1 keeps every token")
        # absolute paths, so that eval / predict / resume find the files from any working directory
        self.sources = [_absolute(s) for s in self.sources]
        if self.test_source:
            self.test_source = _absolute(self.test_source)

    @property
    def kind(self) -> str:
        """``series`` (numeric frames) or ``text`` (tokens)."""
        first = self.sources[0]
        return "series" if first.endswith(".ts") or _uea_name(first) else "text"


@dataclass
class ClassificationData:
    train: Examples
    val: Examples
    test: Examples
    classes: list[str]
    vocab: TokenVocab | None  # text
    scaling: tuple[np.ndarray, np.ndarray] | None  # series: per-feature mean, std of the training part
    input_size: int  # series: features per step
    test_texts: list[str] | None  # text: the raw test sentences (for the TF-IDF baseline and predictions)
    train_texts: list[str] | None  # text: the training part, train then val order (baselines fit on all of it)
    description: str


def _absolute(source: str) -> str:
    """An existing file or folder as an absolute path; anything else (a dataset name) as given."""
    return str(Path(source).resolve()) if Path(source).exists() else str(source)


def _uea_name(source: str) -> str | None:
    if Path(source).exists() or "/" in source or "." in source:
        return None
    try:
        names = shipped_uea_names()
    except CorpusError:
        return None
    key = source.replace("_", "").replace("-", "").lower()
    return next((n for n in names if n.replace("_", "").lower() == key), None)


def _checksums(spec: ClassificationSpec) -> dict[str, str]:
    files: list[Path] = []
    for s in [*spec.sources, *([spec.test_source] if spec.test_source else [])]:
        p = Path(s)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix == ".txt")
        elif p.is_file():
            files.append(p)
    return {str(f.resolve()): sha256_file(f) for f in files}


def load_classification(spec: ClassificationSpec, vocab: TokenVocab | None = None,
                        classes: list[str] | None = None, verify: bool = False) -> ClassificationData:
    """Build the three splits. ``vocab`` / ``classes`` from a saved run are reused; ``verify`` checks that the
    files are the ones the run was trained on (sha256)."""
    sums = _checksums(spec)
    if verify and spec.sha256 and sums != spec.sha256:
        changed = sorted(set(spec.sha256.items()) ^ set(sums.items()))
        raise CorpusError(f"the data changed since the run was trained ({changed[0][0]} differs or is missing) — "
                          "restore it, or train a new run")
    spec.sha256 = sums
    if spec.kind == "series":
        return _load_series(spec, classes)
    return _load_texts(spec, vocab, classes)


def _class_ids(labels, classes: list[str] | None) -> tuple[np.ndarray, list[str]]:
    classes = classes or sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise CorpusError(f"labels {unknown[:5]} are not among the run's classes — evaluate on data with the "
                          "same labels")
    return np.array([index[x] for x in labels], dtype=np.int64), classes


def _load_texts(spec: ClassificationSpec, vocab: TokenVocab | None, classes: list[str] | None) -> ClassificationData:
    texts, labels = [], []
    for source in spec.sources:
        if Path(source).suffix == ".ts":
            raise CorpusError(f"{source}: mixing .ts series with text sources — pass one kind of data")
        if not Path(source).exists() and "/" not in source and "." not in source:
            raise CorpusError(f"{source!r} is neither a file nor a UEA/UCR dataset shipped with aeon (e.g. "
                              "japanese_vowels) — pass a text<TAB>label file, a folder, a .ts file or a dataset name")
        t, lab = read_labeled_texts(source)
        texts += t
        labels += lab
    y, classes = _class_ids(labels, classes)
    if spec.test_source:
        test_texts, test_labels = read_labeled_texts(spec.test_source)
        ty, _ = _class_ids(test_labels, classes)
        train_idx = np.arange(len(texts))
    else:
        train_idx, test_idx = stratified_split(labels, spec.test_fraction, spec.split_seed)
        test_texts, ty = [texts[i] for i in test_idx], y[test_idx]
    fit_idx, val_idx = _val_split(y, train_idx, spec)
    if vocab is None:
        vocab = TokenVocab.build([texts[i] for i in fit_idx], spec.tokens, spec.min_count)
        if len(vocab.tokens) <= 2 and spec.min_count > 1:  # only <pad> and <unk>: every input reads the same
            raise CorpusError(f"no {spec.tokens} token occurs at least {spec.min_count} times in the training texts, "
                              "so every text would read as <unk> — lower --min-count")
    encoded = [vocab.encode(t) for t in texts]
    empty = [texts[i] for i, e in enumerate(encoded) if len(e) == 0]
    if empty:
        raise CorpusError(f"{len(empty)} example(s) have no {spec.tokens} tokens (e.g. {empty[0]!r}) — remove them")
    all_examples = Examples(encoded, y)
    test = Examples([vocab.encode(t) for t in test_texts], ty)
    where = ", ".join(spec.sources)
    return ClassificationData(
        all_examples.subset(fit_idx), all_examples.subset(val_idx), test, classes, vocab, None, 0, test_texts,
        [texts[i] for i in (*fit_idx, *val_idx)],
        f"{where}: {len(texts) + (len(test_texts) if spec.test_source else 0):,} texts, {len(classes)} classes, "
        f"{spec.tokens} tokens ({len(vocab):,} in the vocabulary)")


def _val_split(y: np.ndarray, train_idx: np.ndarray, spec: ClassificationSpec) -> tuple[np.ndarray, np.ndarray]:
    if spec.val_fraction == 0:
        return train_idx, train_idx[:0]
    fit, val = stratified_split(y[train_idx], spec.val_fraction, spec.split_seed + 1)
    if not len(val):
        raise CorpusError(f"--val-fraction {spec.val_fraction} holds out no example (no class has two) — pass "
                          "more data, or --val-fraction 0 to train without validation")
    return train_idx[fit], train_idx[val]


def _load_series(spec: ClassificationSpec, classes: list[str] | None) -> ClassificationData:
    source = spec.sources[0]
    if len(spec.sources) > 1:
        raise CorpusError("series classification takes one --data (a .ts file or a dataset name)")
    name = _uea_name(source)
    if name:
        train_x, train_labels, test_x, test_labels = load_uea(name)
        where = f"{name} (UEA, shipped with aeon; official train/test split)"
    else:
        train_x, train_labels = load_ts_file(source)
        if spec.test_source:
            test_x, test_labels = load_ts_file(spec.test_source)
        else:
            held = stratified_split(train_labels, spec.test_fraction, spec.split_seed)
            test_x, test_labels = [train_x[i] for i in held[1]], train_labels[held[1]]
            train_x, train_labels = [train_x[i] for i in held[0]], train_labels[held[0]]
        where = source
    y, classes = _class_ids(train_labels.tolist(), classes)
    ty, _ = _class_ids(test_labels.tolist(), classes)
    widths = {x.shape[1] for x in [*train_x, *test_x]}
    if len(widths) != 1:
        raise CorpusError(f"the series have different numbers of channels {sorted(widths)} — they must all match")
    fit_idx, val_idx = _val_split(y, np.arange(len(y)), spec)
    examples = Examples(train_x, y)
    fit = examples.subset(fit_idx)
    return ClassificationData(
        fit, examples.subset(val_idx), Examples(test_x, ty), classes, None, fit_scaler(fit.inputs), widths.pop(),
        None, None, f"{where}: {len(y)} train / {len(ty)} test series, {len(classes)} classes")
