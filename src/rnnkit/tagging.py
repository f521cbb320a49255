"""Tagging end to end: a trained tagger's tags for sentences, and its test score against the classical baselines.
The CLI verbs (``rnnkit tag``) are thin over this; the data and its split are ``rnnkit.data.tagging``.

Scores are per step (accuracy), per tag (precision, recall, F1 over the test steps) and per sentence (every tag
right). Macro F1 averages the tags that occur in the test or are predicted there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rnnkit.data.labeled import TokenVocab
from rnnkit.data.tagging import TaggedExamples, TaggingData
from rnnkit.scores import class_scores

KIND = "tagger"


@torch.no_grad()
def predict_tags(model: nn.Module, examples: TaggedExamples, device: str | torch.device = "cpu",
                 batch_size: int = 128) -> list[np.ndarray]:
    """The tag ids of every step of every sequence, in order (``model.decode``: each step's most likely tag, or the
    most likely sequence under a CRF)."""
    was_training = model.training
    model.eval()
    out = []
    for b in examples.batches(batch_size):
        best = model.decode(b.x.to(device), b.lengths).cpu().numpy()  # (B, T)
        out += [best[i, :n] for i, n in enumerate(b.lengths.tolist())]
    model.train(was_training)
    return out


def tag_tokens(model: nn.Module, vocab: TokenVocab, tags: list[str], sentences: Sequence[Sequence[str]],
               device: str | torch.device = "cpu") -> list[list[str]]:
    """Tags (names) for sentences given as tokens (words, or the characters a derived task reads)."""
    ids = [vocab.ids(s) for s in sentences]
    examples = TaggedExamples(ids, [np.zeros(len(x), dtype=np.int64) for x in ids])
    return [[tags[t] for t in row] for row in predict_tags(model, examples, device)]


def score(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray], tags: list[str]) -> dict:
    """Step accuracy, sentence accuracy, macro F1 and each tag's precision / recall / F1 / support (the tags that
    occur in the test or are predicted there)."""
    scores = class_scores(np.concatenate(truth), np.concatenate(pred), tags)
    per_tag = {t: r for t, r in scores["per_class"].items() if r["support"] or r["precision"] is not None}
    return {
        "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
        "sentence_accuracy": float(np.mean([np.array_equal(a, b) for a, b in zip(truth, pred, strict=True)])),
        "per_tag": per_tag, "test_steps": int(sum(len(t) for t in truth)), "test_sentences": len(truth),
    }


def evaluate(model: nn.Module, data: TaggingData, device: str | torch.device = "cpu",
             with_baselines: bool = True, pred: list[np.ndarray] | None = None) -> dict:
    """The model's test score, and each baseline's accuracy and macro F1 on the same sentences. ``pred``: the
    model's tags for the test sentences (``predict_tags``), when the caller has them already."""
    from rnnkit.baselines.tag import maxent_tags, most_frequent_tag

    truth = data.test.targets
    result = score(truth, predict_tags(model, data.test, device) if pred is None else pred, data.tags)
    if with_baselines:
        train_tags = [*data.train.targets, *data.val.targets]
        result["baselines"] = {}
        for name, method in (("most_frequent_tag", most_frequent_tag), ("maxent_window", maxent_tags)):
            got = score(truth, method(data.train_tokens, train_tags, data.test_tokens), data.tags)
            result["baselines"][name] = {"accuracy": got["accuracy"], "macro_f1": got["macro_f1"],
                                         "sentence_accuracy": got["sentence_accuracy"]}
    return result
