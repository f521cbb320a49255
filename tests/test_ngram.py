"""The n-gram baseline (``rnnkit.baselines.ngram``): distributions that sum to one, counts against counting by hand
(each event, orders 1, 3 and 5, and a vocabulary large enough for the row path), tuned weights as the grid's argmin, and
the refit with them."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from rnnkit.baselines.ngram import NgramModel, fit_tuned


# -- the n-gram baseline -------------------------------------------------------------------------------------
def mixture(model: NgramModel, probs: np.ndarray, seen: np.ndarray) -> np.ndarray:
    w = model.weights * seen
    return (probs * w).sum(-1) / w.sum(-1)


def ngram_row(model: NgramModel, context: list[int], target: int) -> float:
    """P(target | context) through component_probs: ``context`` (the sequence so far) then ``target``."""
    seq = context + ([target] if target else [])
    probs, seen = model.component_probs([seq])
    return float(mixture(model, probs[len(context):len(context) + 1], seen[len(context):len(context) + 1])[0])


def markov_corpus(n: int, vocab: int, seed: int) -> list[list[int]]:
    """Sequences of tokens 1..vocab-1 from a random second-order Markov chain (ending at random)."""
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(vocab - 1, 0.3), size=(vocab, vocab))
    out = []
    for _ in range(n):
        seq, a, b = [], 0, 0
        for _ in range(rng.integers(1, 9)):
            t = int(rng.choice(vocab - 1, p=table[a, b])) + 1
            seq.append(t)
            a, b = b, t
        out.append(seq)
    return out


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_rows_sum_to_one(order):
    vocab = 6
    model = NgramModel(order, vocab).fit(markov_corpus(40, vocab - 1, seed=order))  # token 5 never seen
    rng = np.random.default_rng(0)
    model.weights = rng.dirichlet(np.ones(order + 1))
    for context in ([], [1], [2, 3], [1, 4, 2], [5], [5, 5], [3, 5]):
        row = [ngram_row(model, context, w) for w in range(vocab)]
        assert sum(row) == pytest.approx(1.0, abs=1e-12)
        assert min(row) > 0
    seq = [1, 2, 5, 3]
    probs, seen = model.component_probs([seq])
    assert model.nll([seq]) == pytest.approx(float(-np.log(mixture(model, probs, seen)).mean()), abs=1e-12)


def test_ngram_hand_counts():
    model = NgramModel(2, 4).fit([[1, 2], [1]])
    # events: (<s>)->1, (1)->2, (2)-><s>, (<s>)->1, (1)-><s>; unigram counts 1:2, 2:1, <s>:2 of 5
    probs, seen = model.component_probs([[1, 2]])
    np.testing.assert_allclose(probs, [[0.25, 2 / 5, 1.0], [0.25, 1 / 5, 0.5], [0.25, 2 / 5, 1.0]], rtol=1e-12)
    assert seen.all()
    probs, seen = model.component_probs([[3]])  # 3 was never seen, nor the context (3,)
    np.testing.assert_allclose(probs, [[0.25, 0.0, 0.0], [0.25, 2 / 5, 0.0]], rtol=1e-12)
    assert seen.tolist() == [[True, True, True], [True, True, False]]
    model.weights = np.array([0.2, 0.3, 0.5])
    expected = -(math.log(0.2 * 0.25) + math.log((0.2 * 0.25 + 0.3 * 0.4) / 0.5)) / 2
    assert model.nll([[3]]) == pytest.approx(expected, abs=1e-12)

    tri = NgramModel(3, 4).fit([[1, 2], [1, 3], [2]])
    # order - 1 leading boundaries: the first token is predicted from (<s>, <s>) — 2 of 3 sequences start with 1
    probs, _ = tri.component_probs([[1]])
    np.testing.assert_allclose(probs[0], [0.25, 2 / 8, 2 / 3, 2 / 3], rtol=1e-12)
    # the final boundary is predicted too: never after (<s>, 1), always after (1, 3); 3 ends in 8 events
    np.testing.assert_allclose(probs[1], [0.25, 3 / 8, 0.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(tri.component_probs([[1, 3]])[0][2], [0.25, 3 / 8, 1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_counts_every_token_and_the_end(order):
    seqs = [[3], [], [1, 2, 2, 4], [2, 1]]
    model = NgramModel(order, 5).fit(seqs)
    probs, _ = model.component_probs(seqs)
    assert len(probs) == sum(len(s) + 1 for s in seqs)
    assert model.context_counts[0][()] == sum(len(s) + 1 for s in seqs)
    assert model.counts[0][((), 0)] == len(seqs)  # one end per sequence
    if order > 1:  # the first token is predicted from order - 1 boundaries
        assert model.context_counts[order - 1][(0,) * (order - 1)] == len(seqs)
    with pytest.raises(ValueError):
        NgramModel(0, 5)


@pytest.mark.parametrize("order,vocab", [(1, 5), (3, 5), (5, 7), (3, 2 ** 21)])
def test_ngram_counts_equal_counting_each_event_by_hand(order, vocab):
    """The NumPy counting against a loop over every (history, target) event; the last case has too many possible
    events for one integer code and counts rows instead."""

    rng = np.random.default_rng(order)
    seqs = [rng.integers(0, 5, int(rng.integers(0, 12))).tolist() for _ in range(30)] + [[]]
    seqs[3] = [vocab - 1, 2, vocab - 1]
    model = NgramModel(order, vocab).fit(seqs)
    counts = [Counter() for _ in range(order)]
    contexts = [Counter() for _ in range(order)]
    for seq in seqs:
        framed = [0] * (order - 1) + seq + [0]
        for i in range(order - 1, len(framed)):
            for k in range(order):
                counts[k][(tuple(framed[i - k:i]), framed[i])] += 1
                contexts[k][tuple(framed[i - k:i])] += 1
    assert model.counts == counts and model.context_counts == contexts
    with pytest.raises(ValueError, match="token ids"):
        NgramModel(order, vocab).fit([[vocab]])


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_tune_is_the_grid_argmin(order):
    corpus = markov_corpus(300, 6, seed=10 + order)
    train, held = corpus[:200], corpus[200:]
    model = NgramModel(order, 6).fit(train)
    uniform = model.nll(held)
    model.tune(held)
    assert model.weights.sum() == pytest.approx(1.0) and model.weights[0] > 0
    assert model.nll(held) <= uniform + 1e-12
    # every grid point (step 0.05, uniform weight > 0) does no better
    probs, seen = model.component_probs(held)
    tuned = model.nll(held)
    grid = [np.array(w) / 20 for w in np.ndindex(*(21,) * (order + 1)) if sum(w) == 20 and w[0] > 0]
    best = min(float(-np.log((probs * (w * seen)).sum(-1) / (w * seen).sum(-1)).mean()) for w in grid)
    assert tuned == pytest.approx(best, abs=1e-12)


def test_fit_tuned_refits_counts_with_the_tuned_weights():
    corpus = markov_corpus(200, 6, seed=3)
    train, held = corpus[:150], corpus[150:]
    model = fit_tuned(2, 6, train, held)
    weights = NgramModel(2, 6).fit(train).tune(held).weights
    assert model.weights.tolist() == weights.tolist()
    both = NgramModel(2, 6).fit(train + held)
    assert model.counts == both.counts and model.context_counts == both.context_counts
