"""Heads (the loss read off the hidden states) and the input embedding, forward and backward.

Every head is a linear layer ``out = y W_hy^T + b_y`` on ``y (..., H)`` — every step ``(B, T, H)``, or only
the last ``(B, H)`` — followed by a loss averaged over its terms. ``params`` holds ``weight_hy (V, H)`` and
``bias_y (V)``. A head returns the loss, its output, ``dy`` (dL/dy, the ``dhs`` BPTT starts from) and the
gradients of its own weights. For a loss on the last step only, pass ``hs[:, -1]`` and put ``dy`` into
the last step of an otherwise zero ``dhs``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IGNORE_INDEX = -100  # a target that contributes no loss, as in torch's cross_entropy and rnnkit's data


class HeadResult(NamedTuple):
    loss: float
    out: np.ndarray  # logits (..., V) or predictions (..., V)
    dy: np.ndarray  # dL/dy (..., H)
    grads: dict  # weight_hy, bias_y


def linear_backward(params: dict, y: np.ndarray, dout: np.ndarray) -> tuple[np.ndarray, dict]:
    """out = y W_hy^T + b_y  =>  dW_hy = dout^T y, db_y = dout summed, dy = dout W_hy."""
    V, H = params["weight_hy"].shape
    flat_dout, flat_y = dout.reshape(-1, V), y.reshape(-1, H)  # every step of every sequence is one row
    grads = {"weight_hy": flat_dout.T @ flat_y, "bias_y": flat_dout.sum(axis=0)}
    return dout @ params["weight_hy"], grads


def cross_entropy(params: dict, y: np.ndarray, targets: np.ndarray) -> HeadResult:
    """Softmax cross-entropy, averaged over the targets that are not ``IGNORE_INDEX``.

    ``p = softmax(logits)``, ``L = -mean log p[target]``  =>  ``dL/dlogits = (p - onehot(target)) / N``.
    """
    logits = y @ params["weight_hy"].T + params["bias_y"]  # (..., V)
    shifted = logits - logits.max(axis=-1, keepdims=True)  # the same softmax, without overflow
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    valid = targets != IGNORE_INDEX
    safe = np.where(valid, targets, 0)
    n = valid.sum()
    picked = np.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]  # log p[target]
    loss = -(picked * valid).sum() / n
    dlogits = (np.exp(log_p) - one_hot(safe, logits.shape[-1])) * valid[..., None] / n  # ignored rows get 0
    dy, grads = linear_backward(params, y, dlogits)
    return HeadResult(float(loss), logits, dy, grads)


def mse(params: dict, y: np.ndarray, targets: np.ndarray) -> HeadResult:
    """Mean squared error over every element: ``L = mean (pred - target)^2``  =>  ``dL/dpred = 2 (pred -
    target) / N``, N the number of elements."""
    pred = y @ params["weight_hy"].T + params["bias_y"]  # (..., V)
    diff = pred - targets
    loss = (diff**2).mean()
    dy, grads = linear_backward(params, y, 2.0 * diff / diff.size)
    return HeadResult(float(loss), pred, dy, grads)


def one_hot(tokens: np.ndarray, size: int) -> np.ndarray:
    """tokens (B, T) -> (B, T, size): row k of the identity for token k."""
    return np.eye(size)[tokens]


def embed(embedding: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Look up rows: ``x = embedding[tokens]``, (V, C) and (B, T) -> (B, T, C)."""
    return embedding[tokens]


def embed_backward(embedding: np.ndarray, tokens: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Each row's gradient is the sum of dx over the positions that looked it up; rows never used get 0."""
    d_embedding = np.zeros_like(embedding)
    np.add.at(d_embedding, tokens, dx)  # unbuffered: a token used twice adds twice
    return d_embedding
