"""The GRU over a whole sequence, forward and backward. Gates stacked r, z, n (torch's order):

    r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr)             reset gate
    z = σ(x W_iz^T + b_iz + h W_hz^T + b_hz)             update gate
    n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))    candidate
    h_t = (1 - z) * n + z * h_{t-1}

The reset gate multiplies ``h W_hn^T + b_hn`` after the matrix product, so the input half ``gx`` and the
hidden half ``gh`` of the candidate are kept apart. ``params``: ``weight_ih (3H, C)``, ``weight_hh (3H, H)``,
``bias_ih (3H)``, ``bias_hh (3H)`` (biases may be absent). ``x (B, T, C)``; the state is ``h (B, H)``.
"""

from __future__ import annotations

import numpy as np

from rnnkit.reference.lstm import sigmoid


def forward(params: dict, x: np.ndarray, state: np.ndarray | None = None):
    """Run every step. Returns ``(hs (B, T, H), final h (B, H), cache)``."""
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    B, T, _ = x.shape
    H = W_hh.shape[1]
    h = np.zeros((B, T + 1, H))  # index 0 is h_0; t + 1 is the output of step t
    if state is not None:
        h[:, 0] = state
    r, z, n, hn = (np.zeros((B, T, H)) for _ in range(4))
    for t in range(T):
        gx = x[:, t] @ W_ih.T + params.get("bias_ih", 0.0)  # (B, 3H)
        gh = h[:, t] @ W_hh.T + params.get("bias_hh", 0.0)  # (B, 3H)
        r[:, t] = sigmoid(gx[:, :H] + gh[:, :H])
        z[:, t] = sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
        hn[:, t] = gh[:, 2 * H :]  # h W_hn^T + b_hn, which r multiplies
        n[:, t] = np.tanh(gx[:, 2 * H :] + r[:, t] * hn[:, t])
        h[:, t + 1] = (1.0 - z[:, t]) * n[:, t] + z[:, t] * h[:, t]
    cache = {"x": x, "h": h, "r": r, "z": z, "n": n, "hn": hn}
    return h[:, 1:], h[:, -1], cache


def backward(params: dict, cache: dict, dhs: np.ndarray):
    """BPTT. ``dhs (B, T, H)`` is dL/dh_t from the head at each step.

    Returns ``(grads, dx (B, T, C), dh0 (B, H))``; ``grads`` has a gradient for every key of ``params``.
    """
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    x, h = cache["x"], cache["h"]
    T = x.shape[1]
    grads = {k: np.zeros_like(W) for k, W in (("weight_ih", W_ih), ("weight_hh", W_hh))}
    grads["bias_ih"], grads["bias_hh"] = np.zeros(W_ih.shape[0]), np.zeros(W_hh.shape[0])
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(h[:, 0])  # dL/dh_t arriving from step t + 1
    for t in reversed(range(T)):
        r, z, n, hn = cache["r"][:, t], cache["z"][:, t], cache["n"][:, t], cache["hn"][:, t]
        dh = dhs[:, t] + dh_next  # h_t feeds the head and step t + 1
        dn = dh * (1.0 - z)  # h_t = (1 - z) n + z h_{t-1}  =>  dh_t/dn = 1 - z
        dz = dh * (h[:, t] - n)  # dh_t/dz = h_{t-1} - n
        dh_direct = dh * z  # dh_t/dh_{t-1} along the direct path = z
        da_n = dn * (1.0 - n**2)  # n = tanh(a_n)  =>  dn/da_n = 1 - n^2
        dr = da_n * hn  # a_n = gx_n + r * hn  =>  da_n/dr = hn
        dhn = da_n * r  # da_n/dhn = r
        da_r = dr * r * (1.0 - r)  # r = σ(a_r)  =>  dr/da_r = r (1 - r)
        da_z = dz * z * (1.0 - z)  # z = σ(a_z)
        dgx = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H): gx = x W_ih^T + b_ih
        dgh = np.concatenate([da_r, da_z, dhn], axis=1)  # (B, 3H): gh = h_{t-1} W_hh^T + b_hh
        grads["weight_ih"] += dgx.T @ x[:, t]  # dW_ih = dgx^T x_t   (summed over t)
        grads["weight_hh"] += dgh.T @ h[:, t]  # dW_hh = dgh^T h_{t-1}
        grads["bias_ih"] += dgx.sum(axis=0)  # db_ih = dgx summed over the batch
        grads["bias_hh"] += dgh.sum(axis=0)  # db_hh = dgh summed over the batch
        dx[:, t] = dgx @ W_ih  # dx_t = dgx W_ih
        dh_next = dh_direct + dgh @ W_hh  # dL/dh_{t-1}: the direct path plus the path through gh
    return {k: v for k, v in grads.items() if k in params}, dx, dh_next
