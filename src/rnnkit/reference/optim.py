"""Gradient descent steps, written the way torch.optim.SGD and torch.optim.Adam compute them.

Both update a dict of NumPy arrays in place from a dict of gradients with the same keys, and keep their
per-parameter state (momentum, moments) under those keys.
"""

from __future__ import annotations

import numpy as np


class SGD:
    """``p <- p - lr * g``; with momentum μ, ``buf <- μ buf + g`` (``buf = g`` on the first step) and
    ``p <- p - lr * buf``, as torch.optim.SGD with dampening 0 and no Nesterov."""

    def __init__(self, lr: float, momentum: float = 0.0) -> None:
        self.lr, self.momentum = lr, momentum
        self.buffers: dict[str, np.ndarray] = {}

    def step(self, params: dict, grads: dict) -> None:
        for name, g in grads.items():
            if self.momentum:
                buf = self.buffers.get(name)
                self.buffers[name] = g.copy() if buf is None else self.momentum * buf + g
                g = self.buffers[name]
            params[name] -= self.lr * g


class Adam:
    """Adam (Kingma & Ba, 2015), as torch.optim.Adam without weight decay or amsgrad. At step t:

        m <- β1 m + (1 - β1) g            running mean of the gradient
        v <- β2 v + (1 - β2) g^2          running mean of its square
        m̂ = m / (1 - β1^t),  v̂ = v / (1 - β2^t)     undo the pull towards the zeros they start from
        p <- p - lr * m̂ / (sqrt(v̂) + eps)
    """

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict, grads: dict) -> None:
        b1, b2 = self.betas
        self.t += 1
        for name, g in grads.items():
            m = b1 * self.m.get(name, 0.0) + (1.0 - b1) * g
            v = b2 * self.v.get(name, 0.0) + (1.0 - b2) * g * g
            self.m[name], self.v[name] = m, v
            m_hat, v_hat = m / (1.0 - b1**self.t), v / (1.0 - b2**self.t)
            params[name] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
