"""The one return type of every task model, and the checks every recurrent model config shares."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from rnnkit.errors import ConfigError
from rnnkit.nn.cells import CELL_TYPES, State
from rnnkit.nn.recurrent import PATHS


def check_recurrent_config(config) -> None:
    """ConfigError for a config's unknown ``cell`` or ``path``, non-positive sizes, or ``dropout`` outside [0, 1)."""
    if config.cell not in CELL_TYPES:
        raise ConfigError(f"unknown cell {config.cell!r} — use one of {', '.join(CELL_TYPES)}")
    for name in ("hidden_size", "num_layers", "embedding_size"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive (got {getattr(config, name)}) — pass a positive --"
                              f"{name.replace('_', '-')}")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1) (got {config.dropout}) — pass --dropout between 0 and 1")
    if config.path not in PATHS:
        raise ConfigError(f"unknown path {config.path!r} — use one of {', '.join(PATHS)}")


class Output(NamedTuple):
    """``forward(x, state=None, targets=None)`` of every rnnkit model returns this.

    ``logits`` — the model's scores (``(B, T, V)`` for a language model); ``loss`` — the mean loss over valid
    targets, or ``None`` when no targets were given; ``state`` — the recurrent state after the last step;
    ``penalty`` — a training-only regularisation term that trainers add to ``loss`` before the backward pass (the
    language model's activation regularisation), or ``None``. It stays out of ``loss``, so that the training loss
    a trainer logs is the same measure as the validation loss.
    """

    logits: Tensor
    loss: Tensor | None
    state: State | None
    penalty: Tensor | None = None

    def objective(self) -> Tensor:
        """What a trainer minimises: ``loss``, plus ``penalty`` when the model gave one."""
        return self.loss if self.penalty is None else self.loss + self.penalty
