"""The LSTM over a whole sequence, forward and backward. Gates stacked i, f, g, o (torch's order):

    i = σ(x W_ii^T + b_ii + h W_hi^T + b_hi)        input gate
    f = σ(x W_if^T + b_if + h W_hf^T + b_hf)        forget gate
    g = tanh(x W_ig^T + b_ig + h W_hg^T + b_hg)     candidate
    o = σ(x W_io^T + b_io + h W_ho^T + b_ho)        output gate
    c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

``params``: ``weight_ih (4H, C)``, ``weight_hh (4H, H)``, ``bias_ih (4H)``, ``bias_hh (4H)`` (biases may be
absent). ``x (B, T, C)``; the state is the pair ``(h, c)``, both ``(B, H)``.
"""

from __future__ import annotations

import numpy as np


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # = 1 / (1 + exp(-a)), without overflow


def forward(params: dict, x: np.ndarray, state: tuple[np.ndarray, np.ndarray] | None = None):
    """Run every step. Returns ``(hs (B, T, H), final (h, c), cache)``."""
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    b = params.get("bias_ih", 0.0) + params.get("bias_hh", 0.0)
    B, T, _ = x.shape
    H = W_hh.shape[1]
    h = np.zeros((B, T + 1, H))  # index 0 is the initial state; t + 1 is the output of step t
    c = np.zeros((B, T + 1, H))
    if state is not None:
        h[:, 0], c[:, 0] = state
    i, f, g, o = (np.zeros((B, T, H)) for _ in range(4))  # gate values, kept for the backward pass
    for t in range(T):
        a = x[:, t] @ W_ih.T + h[:, t] @ W_hh.T + b  # (B, 4H)
        i[:, t], f[:, t] = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H])
        g[:, t], o[:, t] = np.tanh(a[:, 2 * H : 3 * H]), sigmoid(a[:, 3 * H :])
        c[:, t + 1] = f[:, t] * c[:, t] + i[:, t] * g[:, t]
        h[:, t + 1] = o[:, t] * np.tanh(c[:, t + 1])
    cache = {"x": x, "h": h, "c": c, "i": i, "f": f, "g": g, "o": o}
    return h[:, 1:], (h[:, -1], c[:, -1]), cache


def backward(params: dict, cache: dict, dhs: np.ndarray):
    """BPTT. ``dhs (B, T, H)`` is dL/dh_t from the head at each step.

    Returns ``(grads, dx (B, T, C), (dh0, dc0))``; ``grads`` has a gradient for every key of ``params``.
    """
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    x, h, c = cache["x"], cache["h"], cache["c"]
    T = x.shape[1]
    grads = {"weight_ih": np.zeros_like(W_ih), "weight_hh": np.zeros_like(W_hh)}
    db = np.zeros(W_hh.shape[0])
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(h[:, 0])  # dL/dh_t and dL/dc_t arriving from step t + 1
    dc_next = np.zeros_like(c[:, 0])
    for t in reversed(range(T)):
        i, f, g, o = cache["i"][:, t], cache["f"][:, t], cache["g"][:, t], cache["o"][:, t]
        tanh_c = np.tanh(c[:, t + 1])
        dh = dhs[:, t] + dh_next  # h_t feeds the head and step t + 1
        do = dh * tanh_c  # h = o * tanh(c)  =>  dh/do = tanh(c)
        dc = dc_next + dh * o * (1.0 - tanh_c**2)  # c feeds h_t and c_{t+1}: dh/dc = o (1 - tanh^2 c)
        di = dc * g  # c = f * c_{t-1} + i * g  =>  dc/di = g
        dg = dc * i  # dc/dg = i
        df = dc * c[:, t]  # dc/df = c_{t-1}
        dc_next = dc * f  # dc/dc_{t-1} = f: the additive path
        da = np.concatenate(
            [
                di * i * (1.0 - i),  # i = σ(a_i)  =>  di/da_i = i (1 - i)
                df * f * (1.0 - f),  # f = σ(a_f)
                dg * (1.0 - g**2),  # g = tanh(a_g)  =>  dg/da_g = 1 - g^2
                do * o * (1.0 - o),  # o = σ(a_o)
            ],
            axis=1,
        )  # (B, 4H): gradient of the stacked pre-activations a = x W_ih^T + h_{t-1} W_hh^T + b
        grads["weight_ih"] += da.T @ x[:, t]  # dW_ih = da^T x_t   (summed over t)
        grads["weight_hh"] += da.T @ h[:, t]  # dW_hh = da^T h_{t-1}
        db += da.sum(axis=0)  # db_ih = db_hh = da summed over the batch
        dx[:, t] = da @ W_ih  # dx_t = da W_ih
        dh_next = da @ W_hh  # dL/dh_{t-1} = da W_hh
    grads["bias_ih"] = db
    grads["bias_hh"] = db.copy()
    return {k: v for k, v in grads.items() if k in params}, dx, (dh_next, dc_next)
