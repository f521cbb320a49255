"""AWD-LSTM's activation regularisation (Merity et al., 2017) as one autograd function that keeps no copies.

``ar * mean(y^2) + tar * mean((y[:, 1:] - y[:, :-1])^2)`` written with tensor operations keeps, for the backward
pass, an fp32 copy of ``y``, the step-to-step differences and their squares, and frees their gradients only at the
end: some ten tensors the size of the top layer's outputs (~150 MiB for a batch of 64 x 128 steps x 512 units).
This function keeps only ``y`` itself (which the layer holds anyway) and works through it a block of rows at a time,
in fp32 at least (fp64 for fp64), so its extra memory is one gradient the size of ``y`` plus a block.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

BLOCK = 1 << 20  # elements of y per block of rows: a few MiB of fp32 temporaries


def _blocks(y: Tensor):
    rows = max(1, BLOCK // max(1, y[0].numel()))
    for start in range(0, y.shape[0], rows):
        yield slice(start, start + rows)


class _ActivationPenalty(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, ar: float, tar: float) -> Tensor:
        T = y.shape[1]
        tar = tar if T > 1 else 0.0
        squares = torch.zeros((), dtype=torch.float64, device=y.device)
        changes = torch.zeros((), dtype=torch.float64, device=y.device)
        wide = torch.promote_types(y.dtype, torch.float32)
        for rows in _blocks(y):
            block = y[rows].to(wide)
            if ar:
                squares += block.pow(2).sum(dtype=torch.float64)
            if tar:
                changes += (block[:, 1:] - block[:, :-1]).pow(2).sum(dtype=torch.float64)
        ctx.save_for_backward(y)
        ctx.ar = ar / y.numel()
        ctx.tar = tar / (y.numel() // T * (T - 1)) if tar else 0.0
        return (ctx.ar * squares + ctx.tar * changes).to(wide)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (y,) = ctx.saved_tensors
        out = torch.empty_like(y)
        wide = torch.promote_types(y.dtype, torch.float32)
        g = grad.to(wide)
        for rows in _blocks(y):
            block = y[rows].to(wide)
            d = block * (2 * ctx.ar)
            if ctx.tar:
                change = (block[:, 1:] - block[:, :-1]) * (2 * ctx.tar)  # d/dy_t of (y_t - y_{t-1})^2 ...
                d[:, 1:] += change
                d[:, :-1] -= change  # ... and of (y_{t+1} - y_t)^2
            out[rows] = d * g
        return out, None, None


def activation_penalty(y: Tensor, ar: float, tar: float) -> Tensor | None:
    """``ar * mean(y^2) + tar * mean((y[:, t] - y[:, t-1])^2)`` over ``y (B, T, ...)``; None when both are 0.

    The change from step to step is taken within ``y`` (T = 1 has none). The result is fp32 (fp64 for fp64 ``y``),
    differentiable once, in ``y`` only.
    """
    if not (ar or tar):
        return None
    return _ActivationPenalty.apply(y, float(ar), float(tar))
