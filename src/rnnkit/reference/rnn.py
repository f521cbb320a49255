"""The Elman RNN over a whole sequence, forward and backward.

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)        act = tanh (default) or relu

``params``: ``weight_ih (H, C)``, ``weight_hh (H, H)``, ``bias_ih (H)``, ``bias_hh (H)`` (biases may be
absent). ``x (B, T, C)``; the state is ``h (B, H)``.
"""

from __future__ import annotations

import numpy as np

NONLINEARITIES = ("tanh", "relu")


def forward(params: dict, x: np.ndarray, state: np.ndarray | None = None, nonlinearity: str = "tanh"):
    """Run every step. Returns ``(hs (B, T, H), final h (B, H), cache)``; ``cache`` is what backward needs."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r} — use 'tanh' or 'relu'")
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    b = params.get("bias_ih", 0.0) + params.get("bias_hh", 0.0)
    B, T, _ = x.shape
    H = W_hh.shape[0]
    h = np.zeros((B, T + 1, H))  # h[:, 0] is h_0; h[:, t + 1] is the output of step t
    if state is not None:
        h[:, 0] = state
    a = np.zeros((B, T, H))  # pre-activations
    for t in range(T):
        a[:, t] = x[:, t] @ W_ih.T + h[:, t] @ W_hh.T + b
        h[:, t + 1] = np.tanh(a[:, t]) if nonlinearity == "tanh" else np.maximum(a[:, t], 0.0)
    cache = {"x": x, "h": h, "a": a, "nonlinearity": nonlinearity}
    return h[:, 1:], h[:, -1], cache


def backward(params: dict, cache: dict, dhs: np.ndarray):
    """BPTT. ``dhs (B, T, H)`` is dL/dh_t from the head at each step.

    Returns ``(grads, dx (B, T, C), dh0 (B, H))``; ``grads`` has a gradient for every key of ``params``.
    """
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    x, h, a = cache["x"], cache["h"], cache["a"]
    T = x.shape[1]
    grads = {"weight_ih": np.zeros_like(W_ih), "weight_hh": np.zeros_like(W_hh)}
    db = np.zeros(W_hh.shape[0])
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(h[:, 0])  # dL/dh_t arriving from step t + 1 (nothing after the last step)
    for t in reversed(range(T)):
        dh = dhs[:, t] + dh_next  # h_t feeds the head and step t + 1: add both gradients
        if cache["nonlinearity"] == "tanh":
            da = dh * (1.0 - h[:, t + 1] ** 2)  # h = tanh(a)  =>  dh/da = 1 - h^2
        else:
            da = dh * (a[:, t] > 0)  # h = max(a, 0)  =>  dh/da = 1 where a > 0
        grads["weight_ih"] += da.T @ x[:, t]  # a = x W_ih^T + ...  =>  dW_ih = da^T x   (summed over t)
        grads["weight_hh"] += da.T @ h[:, t]  # a = ... + h_{t-1} W_hh^T  =>  dW_hh = da^T h_{t-1}
        db += da.sum(axis=0)  # a = ... + b_ih + b_hh  =>  db = da summed over the batch
        dx[:, t] = da @ W_ih  # dx_t = da W_ih
        dh_next = da @ W_hh  # dL/dh_{t-1} = da W_hh, carried one step back
    grads["bias_ih"] = db
    grads["bias_hh"] = db.copy()  # both biases enter the sum the same way
    return {k: g for k, g in grads.items() if k in params}, dx, dh_next
