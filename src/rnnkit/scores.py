"""Per-class scores of predictions against the truth, for classifiers and taggers alike (scikit-learn's
``precision_recall_fscore_support`` conventions: a class never predicted has precision 0, a class with no
examples recall 0 — reported here as None, with its support, so that it is not read as a miss)."""

from __future__ import annotations

import numpy as np


def class_scores(truth: np.ndarray, pred: np.ndarray, names: list[str]) -> dict:
    """Accuracy, macro F1 (over the classes that occur in ``truth`` or ``pred``), the confusion matrix (rows: truth)
    and each class's precision / recall / F1 / support, from integer class ids."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    hit = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(1), confusion.sum(0)
    precision = np.divide(hit, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(hit, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    seen = (support > 0) | (predicted > 0)
    return {
        "accuracy": float(hit.sum() / max(len(truth), 1)),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "confusion": confusion.tolist(),
        "per_class": {names[i]: {"precision": float(precision[i]) if predicted[i] else None,
                                 "recall": float(recall[i]) if support[i] else None, "f1": float(f1[i]),
                                 "support": int(support[i])} for i in range(k)},
    }
