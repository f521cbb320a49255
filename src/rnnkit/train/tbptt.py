"""The language-model trainer: stateful truncated BPTT over token streams.

Works with any model that has ``init_state(B)`` and ``forward(x, state, targets) -> Output(logits, loss, state)``.
Shape letters: B streams (batch), T window length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.data.streams import IGNORE_INDEX, Streams
from rnnkit.errors import ConfigError, CorpusError
from rnnkit.nn.cells import State
from rnnkit.nn.recurrent import map_state
from rnnkit.train.loop import LoopConfig, LoopTrainer


@dataclass
class TrainConfig(LoopConfig):
    """One language-model training run; saved in config.json. CLI flags are derived from these fields."""

    batch_size: int = field(default=64, metadata={"help": "parallel streams per step (B)"})
    seq_len: int = field(default=128, metadata={"help": "TBPTT window: steps backpropagated per update (T)"})
    eval_streams: int = field(default=16, metadata={"help": "parallel streams for validation"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("seq_len", "eval_streams"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive (got {getattr(self, name)})")


def detach_state(state: State | None) -> State | None:
    """Cut the graph at the window edge so BPTT stops here.

    The values carry on into the next window — the model keeps its memory of the stream — but gradients
    from the next window's loss do not flow back into this one. Without this, every update would
    backpropagate through the whole history seen so far, and time and memory would grow without bound.
    """
    return None if state is None else map_state(lambda t: t.detach(), state)


@torch.no_grad()
def evaluate(model: nn.Module, tokens: np.ndarray, streams: int, device: torch.device, window: int = 1024) -> float:
    """Mean next-token loss (nats) over every target of ``tokens``, state carried across windows.

    With the state carried, the result does not depend on ``window``; only on ``streams`` (each stream starts
    from the zero state).
    """
    was_training = model.training
    model.eval()
    batches = Streams(tokens, min(streams, len(tokens) - 1), window)
    total, count, state = 0.0, 0, None
    for k in range(len(batches)):
        x, y = (t.to(device) for t in batches.window(k))
        out = model(x, state)
        state = out.state
        logits = out.logits.float().flatten(0, 1)  # (B*T, V)
        total += nn.functional.cross_entropy(logits, y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((y != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / count


class Trainer(LoopTrainer):
    """Trains a token-stream model by stateful truncated BPTT, writing checkpoints into ``run_dir``."""

    def __init__(
        self,
        model: nn.Module,
        train_tokens: np.ndarray,
        val_tokens: np.ndarray,
        config: TrainConfig,
        run_dir: str | Path,
        show_progress: bool = True,
    ) -> None:
        per_stream = (len(train_tokens) - 1) // config.batch_size
        if per_stream < config.seq_len:
            raise CorpusError(
                f"the training split ({len(train_tokens):,} characters) is shorter than one window per stream "
                f"(batch_size {config.batch_size} x seq_len {config.seq_len}) — pass a larger corpus or lower "
                "--batch-size / --seq-len"
            )
        if len(val_tokens) < 2:
            raise CorpusError("the validation split needs at least 2 characters — pass a larger corpus")
        super().__init__(model, config, run_dir, show_progress)
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.epoch = self.window = 0
        self.state: State | None = None  # the hidden state carried from the previous window
        self._streams: Streams | None = None

    # -- data ------------------------------------------------------------------------------------------------
    def _epoch_streams(self, epoch: int) -> Streams:
        """Epoch 0 starts at the first character; later epochs shift by a seeded offset below T, so windows
        do not fall on the same edges every epoch."""
        rng = np.random.default_rng([self.config.seed, epoch])
        offset = 0 if epoch == 0 else int(rng.integers(self.config.seq_len))
        return Streams(self.train_tokens[offset:], self.config.batch_size, self.config.seq_len)

    def _next_batch(self) -> tuple[Tensor, Tensor]:
        if self._streams is None:
            self._streams = self._epoch_streams(self.epoch)
        if self.window >= len(self._streams):
            self.epoch, self.window, self.state = self.epoch + 1, 0, None  # new streams start from zero state
            self._streams = self._epoch_streams(self.epoch)
        x, y = self._streams.window(self.window)
        self.window += 1
        return x.to(self.device), y.to(self.device)

    # -- the LoopTrainer hooks -------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, int]:
        """One TBPTT window: forward with the carried state, backward, clip, AdamW. Returns (loss, norm, tokens)."""
        x, y = self._next_batch()
        self.model.train()
        with self.autocast():
            out = self.model(x, self.state, y)
        norm = self.optimize(out.loss)
        self.state = detach_state(out.state)
        return out.loss.item(), norm, int((y != IGNORE_INDEX).sum())

    def validate(self) -> dict:
        return {"val_loss": evaluate(self.model, self.val_tokens, self.config.eval_streams, self.device)}

    def position(self) -> tuple[dict, dict[str, Tensor]]:
        tensors, state_kind = {}, "none"
        if self.state is not None:
            parts = self.state if isinstance(self.state, tuple) else (self.state,)
            state_kind = "tuple" if isinstance(self.state, tuple) else "tensor"
            tensors = {f"carry.{i}": t for i, t in enumerate(parts)}
        return {"epoch": self.epoch, "window": self.window, "state_kind": state_kind}, tensors

    def restore_position(self, meta: dict, tensors: dict[str, Tensor]) -> None:
        self.epoch, self.window = meta["epoch"], meta["window"]
        carry = [tensors[f"carry.{i}"].to(self.device) for i in range(2) if f"carry.{i}" in tensors]
        kind = meta["state_kind"]
        self.state = {"none": None, "tensor": carry[0] if carry else None, "tuple": tuple(carry)}[kind]
        self._streams = self._epoch_streams(self.epoch)
