"""Classical baselines a tagger must beat, scored on the same test sentences: each token's most frequent training
tag (the classic part-of-speech baseline), and a maximum-entropy tagger — logistic regression on the tokens in a
window of ±2 around each step (scikit-learn, the ``classical`` extra).

Tokens and tags are lists per sentence: ``tokens[i][t]`` a string, ``tags[i][t]`` a tag id.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from rnnkit.baselines.classify import EXTRA
from rnnkit.errors import RnnkitError

WINDOW = 2  # tokens either side of the step the maximum-entropy tagger reads
MAX_TRAIN_STEPS = 200_000  # the maximum-entropy tagger fits on the first sentences up to this many steps


def most_frequent_tag(train_tokens: Sequence[Sequence[str]], train_tags: Sequence[Sequence[int]],
                      test_tokens: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Each test token's most frequent training tag (ties: the lower id); an unseen token gets the most frequent
    tag overall."""
    per_token: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for tokens, tags in zip(train_tokens, train_tags, strict=True):
        for w, t in zip(tokens, tags, strict=True):
            per_token[w][int(t)] += 1
            overall[int(t)] += 1

    def best(counts: Counter) -> int:
        return min(counts, key=lambda t: (-counts[t], t))

    fallback = best(overall)
    choice = {w: best(c) for w, c in per_token.items()}
    return [np.array([choice.get(w, fallback) for w in tokens], dtype=np.int64) for tokens in test_tokens]


def window_features(tokens: Sequence[str]) -> list[list[str]]:
    """Each step's features: the tokens at offsets -2..+2 (sentence edges marked), and, for words, the current
    word's lower-cased form, last three letters and shape (capitalised, digits)."""
    padded = ["<s>"] * WINDOW + list(tokens) + ["</s>"] * WINDOW
    rows = []
    for t, w in enumerate(tokens):
        row = [f"{o}={padded[t + WINDOW + o]}" for o in range(-WINDOW, WINDOW + 1)]
        if len(w) > 1:
            row += [f"low={w.lower()}", f"suf={w[-3:].lower()}", f"cap={w[:1].isupper()}",
                    f"digit={any(c.isdigit() for c in w)}"]
        rows.append(row)
    return rows


def maxent_tags(train_tokens: Sequence[Sequence[str]], train_tags: Sequence[Sequence[int]],
                test_tokens: Sequence[Sequence[str]], seed: int = 0) -> list[np.ndarray]:
    """Logistic regression on hashed window features (``window_features``), fit on the first training sentences
    up to ``MAX_TRAIN_STEPS`` steps."""
    try:
        from sklearn.feature_extraction import FeatureHasher
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise RnnkitError(f"the maximum-entropy baseline needs scikit-learn — {EXTRA}") from None
    rows, y = [], []
    for tokens, tags in zip(train_tokens, train_tags, strict=True):
        if len(rows) >= MAX_TRAIN_STEPS:
            break
        rows += window_features(tokens)
        y += [int(t) for t in tags]
    hasher = FeatureHasher(n_features=1 << 18, input_type="string", alternate_sign=False)
    y = np.asarray(y)
    if len(np.unique(y)) < 2:  # one tag in the fitted part: it is the answer everywhere
        return [np.full(len(tokens), y[0], dtype=np.int64) for tokens in test_tokens]
    clf = LogisticRegression(max_iter=300, C=1.0, random_state=seed).fit(hasher.transform(rows), y)
    test_rows = [r for tokens in test_tokens for r in window_features(tokens)]
    flat = clf.predict(hasher.transform(test_rows)).astype(np.int64)
    out, start = [], 0
    for tokens in test_tokens:
        out.append(flat[start:start + len(tokens)])
        start += len(tokens)
    return out
