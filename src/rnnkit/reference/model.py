"""A character language model put together from the pieces: tokens -> (embedding or one-hot) -> cell -> head.

    x_t = embedding[token_t]  (or the one-hot vector of token_t)         (B, T, C)
    h_t = cell(x_t, h_{t-1})                                            (B, T, H)
    logits_t = h_t W_hy^T + b_y;   L = mean cross-entropy(logits_t, target_t)    (B, T, V)

``params`` holds the cell's ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, the head's ``weight_hy``
and ``bias_y``, and optionally ``embedding (V, C)``; without it the input is one-hot and C = V.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from rnnkit.reference import gru, heads, lstm, rnn


class CellFunctions(NamedTuple):
    forward: Callable  # (params, x, state=None) -> (hs, final state, cache)
    backward: Callable  # (params, cache, dhs) -> (grads, dx, dstate0)
    gates: int  # how many H-sized blocks weight_ih and weight_hh stack


# The names rnnkit's cells go by (rnnkit.nn.CELL_TYPES).
CELLS = {
    "rnn": CellFunctions(rnn.forward, rnn.backward, 1),
    "rnn_tanh": CellFunctions(rnn.forward, rnn.backward, 1),
    "rnn_relu": CellFunctions(partial(rnn.forward, nonlinearity="relu"), rnn.backward, 1),
    "lstm": CellFunctions(lstm.forward, lstm.backward, 4),
    "gru": CellFunctions(gru.forward, gru.backward, 3),
}


def cell_functions(cell: str) -> CellFunctions:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r} — use one of {', '.join(CELLS)}")
    return CELLS[cell]


def init_params(
    cell: str, input_size: int, hidden_size: int, output_size: int, rng: np.random.Generator,
    vocab_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Random weights: U(-1/sqrt(H), 1/sqrt(H)) for the cell and the head, as torch.nn initialises them.

    With ``vocab_size``, also an ``embedding (vocab_size, input_size)`` drawn from N(0, 1), as nn.Embedding.
    """
    G, H, k = cell_functions(cell).gates, hidden_size, 1.0 / np.sqrt(hidden_size)
    shapes = {
        "weight_ih": (G * H, input_size), "weight_hh": (G * H, H), "bias_ih": (G * H,), "bias_hh": (G * H,),
        "weight_hy": (output_size, H), "bias_y": (output_size,),
    }
    params = {name: rng.uniform(-k, k, shape) for name, shape in shapes.items()}
    if vocab_size is not None:
        params["embedding"] = rng.standard_normal((vocab_size, input_size))
    return params


class LMResult(NamedTuple):
    loss: float
    logits: np.ndarray  # (B, T, V)
    state: object  # the state after the last step: h (B, H), or (h, c) for the LSTM
    grads: dict  # dL/d(every key of params)
    dstate: object  # dL/d(initial state), shaped like it


def language_model_loss(
    cell: str, params: dict, tokens: np.ndarray, targets: np.ndarray, state=None
) -> LMResult:
    """Forward and backward for ``tokens (B, T)`` predicting ``targets (B, T)`` (-100 = no loss there)."""
    fns = cell_functions(cell)
    if "embedding" in params:
        x = heads.embed(params["embedding"], tokens)  # (B, T, C)
    else:
        x = heads.one_hot(tokens, params["weight_ih"].shape[1])  # (B, T, V)
    hs, final, cache = fns.forward(params, x, state)  # (B, T, H)
    head = heads.cross_entropy(params, hs, targets)  # logits (B, T, V); head.dy = dL/dh_t from each step
    grads, dx, dstate = fns.backward(params, cache, head.dy)  # BPTT
    grads.update(head.grads)
    if "embedding" in params:
        grads["embedding"] = heads.embed_backward(params["embedding"], tokens, dx)
    return LMResult(head.loss, head.out, final, grads, dstate)
