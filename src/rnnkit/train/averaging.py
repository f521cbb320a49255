"""An exponential moving average of a model's weights (Polyak averaging), for ``--ema DECAY``.

The average is kept by ``torch.optim.swa_utils.AveragedModel`` (a copy of the model whose parameters are updated
after every optimizer step); what this module adds is the warm-up of the decay and the swap that lets validation,
checkpoints and sampling run the live model with the averaged parameters in place of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def warmed_decay(decay: float, updates: int) -> float:
    """The decay for the update that follows ``updates`` earlier ones: ``min(decay, (1 + n) / (10 + n))``.

    Early on the average would otherwise be mostly the random initial weights: with 0.999 it takes ~1,000 updates to
    forget them. The warm-up lets the first updates weigh more, as TensorFlow's ``ExponentialMovingAverage`` does
    with ``num_updates``."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """The running average of ``model``'s parameters; buffers are not averaged (the live model's are used)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.updates = 0  # counted here as well: reading AveragedModel's count off a GPU would wait for it

        @torch.no_grad()
        def ema(averaged: list[Tensor], current: list[Tensor], count: Tensor) -> None:
            # AveragedModel copies the weights on the first update and calls this from the second on
            torch._foreach_lerp_(averaged, current, 1.0 - warmed_decay(decay, self.updates - 1))

        self.averaged = AveragedModel(model, multi_avg_fn=ema, use_buffers=False)
        self.averaged.requires_grad_(False)

    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)
        self.updates += 1

    def parameters(self) -> dict[str, Tensor]:
        return dict(self.averaged.module.named_parameters())

    @contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[None]:
        """``model`` with the averaged parameters for the duration; its own are put back afterwards."""
        own = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p, a in zip(model.parameters(), self.averaged.module.parameters(), strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(model.parameters(), own, strict=True):
                    p.copy_(saved)

    def state(self) -> dict[str, Tensor]:
        """The average as tensors for trainer_state (``ema.<parameter>``, ``ema.updates``)."""
        tensors = {f"ema.{k}": v.detach() for k, v in self.parameters().items()}
        tensors["ema.updates"] = torch.tensor([self.updates])
        return tensors

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        """Restore what ``state`` saved; tensors that hold no average leave it as it is."""
        if "ema.updates" not in tensors:
            return
        with torch.no_grad():
            for name, p in self.parameters().items():
                p.copy_(tensors[f"ema.{name}"])
            self.averaged.n_averaged.copy_(tensors["ema.updates"].reshape(()))
        self.updates = int(tensors["ema.updates"])
