"""The language-model trainer: stateful truncated BPTT over token streams.

Works with any model that has ``init_state(B)`` and ``forward(x, state, targets) -> Output(logits, loss, state)``;
an ``Output.penalty`` (the language model's activation regularisation) is added to the loss it minimises.
Shape letters: B streams (batch), T window length, V vocabulary.

In a data-parallel run (``ranks``, see ``rnnkit.train.distributed``) rank r trains on its slice of the B streams
and carries their state; a checkpoint holds the state of all B, so a run resumes on any process count that
divides B. Validation is sharded the same way and its sums all-reduced: every rank gets the one-process figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.data.batching import to_device
from rnnkit.data.streams import IGNORE_INDEX, Streams
from rnnkit.errors import ConfigError, CorpusError
from rnnkit.nn.cells import State
from rnnkit.nn.recurrent import map_state
from rnnkit.train.config import LoopConfig
from rnnkit.train.distributed import SINGLE, Ranks, check_split
from rnnkit.train.loop import LoopTrainer


@dataclass
class TrainConfig(LoopConfig):
    """One language-model training run; saved in config.json. CLI flags are derived from these fields."""

    batch_size: int = field(default=64, metadata={"help": "parallel streams per step (B)"})
    # 8e-3 rather than the loop's 3e-3: on the 10-minute Tiny Shakespeare budget the LSTM ended at 1.435 with 5e-3
    # and with 8e-3, against 1.441 with 3e-3; the layer-normalised LSTM (`rnnkit train`'s cell on the CPU) at
    # 1.401-1.412 in four runs (three seeds) with 8e-3, against 1.408-1.411 with 5e-3 and 1.416 with 1.2e-2
    # (BENCHMARKS.md)
    lr: float = field(default=8e-3, metadata={"help": "peak learning rate (AdamW)"})
    # 0.6 rather than the loop's 0.01: with activation regularisation on, three seeds of the 10-minute Tiny
    # Shakespeare run ended at 1.3785, 1.3734 and 1.3740, against 1.3831, 1.3777 and 1.3881 with 0.3 and 1.3845-1.3952
    # in six runs with 0.01 (BENCHMARKS.md). Measured on the layer-normalised LSTM only, whose normalised products
    # do not change when decay shrinks their matrices; what decay does to the plain LSTM here is not measured.
    weight_decay: float = field(default=0.6, metadata={"help": "AdamW weight decay on weight matrices"})
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


def shard_loss(logits: Tensor, targets: Tensor, batch_targets: int, ranks: int) -> Tensor:
    """This rank's part of the whole batch's mean loss, times the number of ranks.

    DDP averages gradients over the ranks, so the update is that of one process over the whole batch (mean over
    its ``batch_targets`` valid targets), however the valid targets of a ragged last window fall between ranks —
    including a rank that holds none.
    """
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 under autocast: loss in fp32
    total = F.cross_entropy(wide.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return total * (ranks / batch_targets)


@torch.no_grad()
def evaluate(model: nn.Module, tokens: np.ndarray, streams: int, device: torch.device, window: int = 1024) -> float:
    """Mean next-token loss (nats) over every target of ``tokens``, state carried across windows.

    With the state carried, the result does not depend on ``window``; only on ``streams`` (each stream starts
    from the zero state).
    """
    total, count = loss_sums(model, tokens, streams, device, window)
    return total / count


@torch.no_grad()
def loss_sums(model: nn.Module, tokens: np.ndarray, streams: int, device: torch.device, window: int = 1024,
              rows: slice = slice(None)) -> tuple[float, int]:
    """``evaluate``'s summed loss and target count, over the ``rows`` of its ``streams`` streams (a rank's share)."""
    was_training = model.training
    model.eval()
    batches = Streams(tokens, min(streams, len(tokens) - 1), window)
    total, count, state = 0.0, 0, None
    for k in range(len(batches)):
        x, y = (t[rows].to(device) for t in batches.window(k))
        if x.shape[0] == 0:  # more ranks than validation streams: this one has none
            break
        out = model(x, state)
        state = out.state
        logits = out.logits.float().flatten(0, 1)  # (B*T, V)
        total += nn.functional.cross_entropy(logits, y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((y != IGNORE_INDEX).sum())
    model.train(was_training)
    return total, count


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
        ranks: Ranks = SINGLE,
    ) -> None:
        check_split(config.batch_size, ranks.size)
        per_stream = (len(train_tokens) - 1) // config.batch_size
        if per_stream < config.seq_len:
            raise CorpusError(
                f"the training split ({len(train_tokens):,} characters) is shorter than one window per stream "
                f"(batch_size {config.batch_size} x seq_len {config.seq_len}) — pass a larger corpus or lower "
                "--batch-size / --seq-len"
            )
        if len(val_tokens) < 2:
            raise CorpusError("the validation split needs at least 2 characters — pass a larger corpus")
        super().__init__(model, config, run_dir, show_progress, ranks)
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

    def _next_batch(self) -> tuple[Tensor, Tensor, int, int]:
        """This rank's rows of the next window, and the number of valid targets in the whole window and in them
        (counted on the CPU: reading a count off the GPU would wait for it)."""
        if self._streams is None:
            self._streams = self._epoch_streams(self.epoch)
        if self.window >= len(self._streams):
            self.epoch, self.window, self.state = self.epoch + 1, 0, None  # new streams start from zero state
            self._streams = self._epoch_streams(self.epoch)
        x, y = self._streams.window(self.window)
        self.window += 1
        rows = self.ranks.rows(self.config.batch_size)
        x, y, window_targets = x[rows], y[rows], int((y != IGNORE_INDEX).sum())
        return to_device(x, self.device), to_device(y, self.device), window_targets, int((y != IGNORE_INDEX).sum())

    # -- the LoopTrainer hooks -------------------------------------------------------------------------------
    def train_step(self) -> tuple[Tensor, Tensor, int]:
        """One TBPTT window: forward with the carried state, backward, clip, AdamW. Returns (loss, norm, tokens):
        the loss without the model's penalty, the measure validation reports."""
        x, y, batch_targets, targets = self._next_batch()
        self.train_model.train()
        with self.autocast():
            if self.ranks.size == 1:
                out = self.train_model(x, self.state, y)
                loss = out.loss
            else:
                out = self.train_model(x, self.state)
                loss = shard_loss(out.logits, y, batch_targets, self.ranks.size)
        # the penalty is each rank's mean over its own streams, which DDP's averaging makes the whole batch's mean
        norm = self.optimize(out._replace(loss=loss).objective())
        self.state = detach_state(out.state)
        return loss.detach(), norm, targets

    def validate(self) -> dict:
        streams = min(self.config.eval_streams, len(self.val_tokens) - 1)
        total, count = loss_sums(self.model, self.val_tokens, streams, self.device, rows=self.ranks.rows(streams))
        total, count = self.ranks.sum(total, count)
        return {"val_loss": total / count}

    def position(self) -> tuple[dict, dict[str, Tensor]]:
        tensors, state_kind = {}, "none"
        if self.state is not None:
            parts = self.state if isinstance(self.state, tuple) else (self.state,)
            state_kind = "tuple" if isinstance(self.state, tuple) else "tensor"
            tensors = {f"carry.{i}": self.ranks.gather_rows(t) for i, t in enumerate(parts)}  # (L, B, H): all B
        return {"epoch": self.epoch, "window": self.window, "state_kind": state_kind}, tensors

    def restore_position(self, meta: dict, tensors: dict[str, Tensor]) -> None:
        self.epoch, self.window = meta["epoch"], meta["window"]
        carry = [tensors[f"carry.{i}"] for i in range(2) if f"carry.{i}" in tensors]
        B = self.config.batch_size
        if carry and carry[0].shape[1] != B:
            raise ConfigError(f"the run carries the state of {carry[0].shape[1]} streams, not --batch-size {B} — "
                              "resume without changing --batch-size")
        carry = [t[:, self.ranks.rows(B)].to(self.device) for t in carry]  # this rank's streams
        kind = meta["state_kind"]
        self.state = {"none": None, "tensor": carry[0] if carry else None, "tuple": tuple(carry)}[kind]
        self._streams = self._epoch_streams(self.epoch)
