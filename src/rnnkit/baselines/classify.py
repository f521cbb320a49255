"""Classical baselines a classifier must beat, scored on the same test split: the majority class and, for text,
TF-IDF n-grams + logistic regression (scikit-learn, the ``classical`` extra)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnnkit.errors import RnnkitError

EXTRA = "pip install 'rnnkit[classical]'"


def majority_accuracy(train_y: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy of always answering the most frequent training class."""
    values, counts = np.unique(train_y, return_counts=True)
    return float(np.mean(np.asarray(test_y) == values[np.argmax(counts)]))


def tfidf_logreg(tokens: str, seed: int = 0):
    """The text pipeline: ``char`` data -> TF-IDF of character 1–4-grams within word boundaries; ``word`` and
    ``subword`` data -> word 1–2-grams plus character 2–5-grams (within word boundaries); then logistic
    regression (C = 10)."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union
    except ImportError:
        raise RnnkitError(f"the TF-IDF baseline needs scikit-learn — {EXTRA}") from None
    if tokens == "char":
        # char_wb (n-grams padded at word edges): 84.96% on names with the split, char 83.72% (C = 10)
        features = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True)
    else:
        features = make_union(
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        )
    return make_pipeline(features, LogisticRegression(max_iter=2000, C=10.0, random_state=seed))


def tfidf_accuracy(train_texts: Sequence[str], train_y: np.ndarray, test_texts: Sequence[str], test_y: np.ndarray,
                   tokens: str) -> float:
    model = tfidf_logreg(tokens).fit(list(train_texts), np.asarray(train_y))
    return float(np.mean(model.predict(list(test_texts)) == np.asarray(test_y)))


def minirocket_accuracy(train_x: Sequence[np.ndarray], train_y: np.ndarray, test_x: Sequence[np.ndarray],
                        test_y: np.ndarray, seed: int = 0) -> float:
    """MiniRocket random convolution features + ridge classifier (aeon), the strong classical peer for series.

    Sequences ``(T_i, C)`` of unequal length are padded to the longest by repeating their last step.
    """
    try:
        from aeon.classification.convolution_based import MiniRocketClassifier
    except ImportError:
        raise RnnkitError(f"the MiniRocket baseline needs aeon — {EXTRA}") from None
    longest = max(len(x) for x in [*train_x, *test_x])

    def stack(xs):  # (N, C, T), aeon's layout
        return np.stack([np.pad(x, ((0, longest - len(x)), (0, 0)), mode="edge").T for x in xs])

    model = MiniRocketClassifier(random_state=seed).fit(stack(train_x), np.asarray(train_y))
    return float(np.mean(model.predict(stack(test_x)) == np.asarray(test_y)))
