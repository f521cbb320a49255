"""The one return type of every task model."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from rnnkit.nn.cells import State


class Output(NamedTuple):
    """``forward(x, state=None, targets=None)`` of every rnnkit model returns this.

    ``logits`` — the model's scores (``(B, T, V)`` for a language model); ``loss`` — the mean loss over valid
    targets, or ``None`` when no targets were given; ``state`` — the recurrent state after the last step.
    """

    logits: Tensor
    loss: Tensor | None
    state: State | None
