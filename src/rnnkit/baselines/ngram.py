"""The classical peer of a generator: an interpolated n-gram model over the same tokens (Jelinek–Mercer).

``P(w | h) = sum_k l_k P_k(w | last k-1 tokens of h)`` over k = 0 (uniform over the vocabulary) .. n, where P_k is
the maximum-likelihood estimate; an order whose context was never seen hands its weight to the others (the weights
of the seen orders are renormalised), so every probability is positive and each row sums to one. The weights are
chosen on held-out sequences by a grid over the simplex ("deleted interpolation"); ``fit_tuned`` then refits the
counts on training + held-out data with those weights, so the baseline sees every sequence the RNN saw.

Sequences are token ids framed like the RNN's: ``order - 1`` boundary tokens (id 0) of context before the first
token, and the boundary predicted after the last, so both models score the same targets.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import numpy as np


class NgramModel:
    def __init__(self, order: int, vocab_size: int) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1 (got {order})")
        self.order, self.vocab_size = order, vocab_size
        self.weights = np.full(order + 1, 1.0 / (order + 1))  # uniform, unigram, bigram, ...
        self.counts: list[Counter] = []
        self.context_counts: list[Counter] = []

    def _events(self, seq: Sequence[int]):
        """``(history, target)`` for every predicted token, the history padded with boundaries."""
        framed = [0] * (self.order - 1) + [int(t) for t in seq] + [0]
        for i in range(self.order - 1, len(framed)):
            yield tuple(framed[i - self.order + 1:i]), framed[i]

    def fit(self, sequences: Sequence[Sequence[int]]) -> NgramModel:
        """Count every (context, target) of every order. The events are counted as integer codes by NumPy (millions
        of characters in seconds), then kept as Counters keyed by ``(context tuple, target)``."""
        self._rows: dict = {}
        self.counts = [Counter() for _ in range(self.order)]  # k: (last k tokens of history, target)
        self.context_counts = [Counter() for _ in range(self.order)]
        n, V = self.order, self.vocab_size
        framed = [np.concatenate([np.zeros(n - 1, np.int64), np.asarray(seq, np.int64).reshape(-1), [0]])
                  for seq in sequences]
        if not framed:
            return self
        tokens = np.concatenate(framed)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= V):
            raise ValueError(f"token ids must lie in [0, {V}) (got {tokens.min()}..{tokens.max()})")
        ends = np.cumsum([len(f) for f in framed])
        # the window ending at each target: its n - 1 tokens of history and the target; windows never cross a
        # sequence's start, which is framed by n - 1 boundaries
        targets = np.concatenate([np.arange(e - len(f) + n - 1, e) for f, e in zip(framed, ends, strict=True)])
        windows = np.lib.stride_tricks.sliding_window_view(tokens, n)[targets - (n - 1)]  # (N, n)
        for k in range(n):
            events = windows[:, n - 1 - k:]  # (N, k + 1): the last k tokens of history and the target
            codes = np.zeros(len(events), np.int64)
            if V ** (k + 1) < 2 ** 62:
                for j in range(k + 1):
                    codes = codes * V + events[:, j]
                _, first, count = np.unique(codes, return_index=True, return_counts=True)
            else:  # too many possible events for one integer: count rows
                _, first, count = np.unique(events, axis=0, return_index=True, return_counts=True)
            for row, c in zip(events[first].tolist(), count.tolist(), strict=True):
                ctx = tuple(row[:-1])
                self.counts[k][(ctx, row[-1])] = c
                self.context_counts[k][ctx] += c
        return self

    def component_probs(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``(P (N, order+1), seen (N, order+1))``: each component's probability of each of the N targets, and
        whether its context was seen (the uniform component always is)."""
        rows, seen = [], []
        for seq in sequences:
            for history, target in self._events(seq):
                p, s = [1.0 / self.vocab_size], [True]
                for k in range(self.order):
                    ctx = history[len(history) - k:] if k else ()
                    total = self.context_counts[k][ctx]
                    p.append(self.counts[k][(ctx, target)] / total if total else 0.0)
                    s.append(total > 0)
                rows.append(p)
                seen.append(s)
        return np.array(rows), np.array(seen)

    def next_log_probs(self, history: Sequence[int]) -> np.ndarray:
        """``log P(w | history)`` for every token ``w`` (V,): the interpolated distribution of the next token after
        ``history`` (the sequence so far, without the leading boundaries; id 0 is the end of the sequence)."""
        h = [0] * (self.order - 1) + [int(t) for t in history]
        mix, total = np.full(self.vocab_size, self.weights[0] / self.vocab_size), self.weights[0]
        for k in range(self.order):
            ctx = tuple(h[len(h) - k:]) if k else ()
            n = self.context_counts[k][ctx]
            if n:
                mix += self.weights[k + 1] * self._row(k, ctx) / n
                total += self.weights[k + 1]
        return np.log(mix / total)

    def _row(self, k: int, ctx: tuple[int, ...]) -> np.ndarray:
        """Counts of every token after ``ctx`` (order k), built once per context and kept."""
        rows = self.__dict__.setdefault("_rows", {})
        row = rows.get((k, ctx))
        if row is None:
            row = rows[(k, ctx)] = np.array([self.counts[k].get((ctx, t), 0) for t in range(self.vocab_size)],
                                            dtype=np.float64)
        return row

    @staticmethod
    def _nll(weights: np.ndarray, probs: np.ndarray, seen: np.ndarray) -> np.ndarray:
        w = weights * seen  # (N, K): unseen contexts hand their weight to the others
        return -np.log((probs * w).sum(-1) / w.sum(-1))

    def nll(self, sequences: Sequence[Sequence[int]]) -> float:
        """Mean negative log-likelihood per predicted token, in nats."""
        return float(self._nll(self.weights, *self.component_probs(sequences)).mean())

    def tune(self, heldout: Sequence[Sequence[int]], step: float = 0.05) -> NgramModel:
        """The interpolation weights (a grid of ``step`` over the simplex, the uniform weight above zero) with the
        lowest NLL on ``heldout``."""
        probs, seen = self.component_probs(heldout)
        n = round(1 / step)
        best, best_nll = self.weights, self._nll(self.weights, probs, seen).mean()  # never worse than now
        for cut in itertools.combinations(range(1, n + self.order + 1), self.order):  # stars and bars
            parts = np.diff([0, *cut, n + self.order + 1]) - 1  # order+1 non-negative parts summing to n
            if parts[0] == 0:
                continue
            w = parts / n
            nll = self._nll(w, probs, seen).mean()
            if nll < best_nll:
                best, best_nll = w, nll
        self.weights = best
        return self


def fit_tuned(order: int, vocab_size: int, train: Sequence, heldout: Sequence, step: float = 0.05) -> NgramModel:
    """Weights tuned on ``heldout`` (a grid of ``step``) with counts from ``train``; then counts refit on both."""
    model = NgramModel(order, vocab_size).fit(train).tune(heldout, step)
    weights = model.weights
    model.fit([*train, *heldout])
    model.weights = weights
    return model
