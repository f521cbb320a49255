"""The trainers for models that read whole sequences in shuffled padded mini-batches (many-to-one, tagging,
one-to-many, translation): one pass over the training examples per epoch, validation loss (and accuracy for classes
and tags) on held-out examples.

Works with any model whose ``forward(x, state=None, targets=None, lengths=None)`` returns ``Output`` with a
mean loss over the batch; it minimises ``Output.objective()``, the loss plus any training penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.data.labeled import Examples
from rnnkit.data.streams import IGNORE_INDEX
from rnnkit.errors import ConfigError, CorpusError
from rnnkit.train.config import LoopConfig
from rnnkit.train.distributed import world_size
from rnnkit.train.loop import LoopTrainer


@dataclass
class BatchTrainConfig(LoopConfig):
    """One many-to-one training run; saved in config.json. CLI flags are derived from these fields."""

    batch_size: int = field(default=32, metadata={"help": "sequences per update (B)"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up steps"})
    # fp32: on the small models and batches of these tasks bf16 autocast is slower on CPU, not faster (JapaneseVowels,
    # GRU 64, batch 16: 27 s bf16 against 18 s fp32 for the same 750 steps)
    precision: str = field(default="fp32", metadata={
        "help": "fp32, or bf16 (autocast: bfloat16 matrix products in training and validation)"})
    epochs: float | None = field(default=None, metadata={
        "help": "passes over the training examples (sets --max-steps)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"epochs must be positive (got {self.epochs})")

    @classmethod
    def resumed(cls, saved: dict, given: dict):
        """The config of a resumed run: the saved one with the flags given now, where a budget given now
        (``epochs``, ``max_steps``, ``minutes``) replaces the saved budget — the saved ``max_steps`` was worked out
        from the saved ``epochs`` and would otherwise cap a longer one."""
        if given.keys() & {"epochs", "max_steps", "minutes"}:
            saved = {**saved, "epochs": None, "max_steps": None, "minutes": None}
        return cls(**{**saved, **given})


class BatchTrainer(LoopTrainer):
    """Trains a many-to-one model on ``train`` Examples, validating on ``val``, checkpoints in ``run_dir``.

    ``val=None`` trains without validation for the budget given and keeps the final weights (best = last).
    ``classes=True`` adds ``val_accuracy`` (argmax of the logits against integer targets) to the figures.
    """

    def __init__(self, model: nn.Module, train: Examples, val: Examples | None, config: BatchTrainConfig,
                 run_dir: str | Path, classes: bool = True, show_progress: bool = True) -> None:
        if world_size() > 1:  # every rank would train alone and all would write the same run directory
            raise ConfigError("many-to-one training runs in one process — start it without torchrun "
                              "(data-parallel training covers `rnnkit train`)")
        if len(train) == 0 or (val is not None and len(val) == 0):
            raise CorpusError(f"{len(train)} training and {0 if val is None else len(val)} validation examples — "
                              "both need at least one")
        self.validates = val is not None
        self.classes = classes
        if classes:
            self.extra_metrics = ("val_accuracy",)
        if config.epochs is not None:
            steps = math.ceil(config.epochs * self.steps_per_epoch(len(train), config.batch_size))
            config.max_steps = min(config.max_steps or steps, steps)
        elif not config.max_steps and not config.minutes:
            raise ConfigError("give a budget: --epochs E, --max-steps N or --minutes M")
        super().__init__(model, config, run_dir, show_progress)
        self.train_examples, self.val_examples = train, val
        self.epoch = self.index = 0  # index: the next batch within this epoch's order
        self._batches: tuple[int, list[np.ndarray]] | None = None  # (epoch, its batches)

    @staticmethod
    def steps_per_epoch(n: int, batch_size: int) -> int:
        return max(1, n // batch_size)  # the last partial batch is dropped: it would weigh its few examples more

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The example indices of each batch of ``epoch``, in order: a permutation seeded by (seed, epoch), cut
        into ``batch_size`` pieces. A function of the epoch alone, so a resumed run draws the same batches."""
        B = self.config.batch_size
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_examples))
        return [order[k * B:(k + 1) * B] for k in range(self.steps_per_epoch(len(order), B))]

    def _next_batch(self):
        if self._batches is None or self._batches[0] != self.epoch:
            self._batches = (self.epoch, self.epoch_batches(self.epoch))
        if self.index >= len(self._batches[1]):
            self.epoch, self.index = self.epoch + 1, 0
            self._batches = (self.epoch, self.epoch_batches(self.epoch))
        picked = self._batches[1][self.index]
        self.index += 1
        return self.train_examples.batch(picked).to(self.device)

    # -- the LoopTrainer hooks -------------------------------------------------------------------------------
    def forward(self, batch):
        """The model on one training batch, with its targets (task trainers feed their own kinds of batch)."""
        return self.model(batch.x, None, batch.y, lengths=batch.lengths)

    @staticmethod
    def tokens(batch) -> int:
        """Steps a batch trains on, for tokens/s: its input steps (a framed sequence: one per predicted token)."""
        return int(batch.lengths.sum())

    def train_step(self) -> tuple[Tensor, Tensor, int]:
        batch = self._next_batch()
        self.model.train()
        with self.autocast():
            out = self.forward(batch)
        norm = self.optimize(out.objective())
        return out.loss.detach(), norm, self.tokens(batch)

    def validate(self) -> dict:
        loss, correct = evaluate_examples(self.model, self.val_examples, self.device, self.config.batch_size * 4)
        figures = {"val_loss": loss}
        if self.classes:
            figures["val_accuracy"] = correct
        return figures

    def selection_key(self, figures: dict) -> tuple[float, ...]:
        """Classes: the best checkpoint is the most accurate one, the lower loss breaking ties. Loss alone picks
        too early: it turns up as the model grows confident while accuracy still climbs (sentiment sentences:
        lowest validation loss at step 400, 78.7% test; most accurate at step 1,200)."""
        if self.classes:
            return (-figures["val_accuracy"], figures["val_loss"])
        return super().selection_key(figures)

    def position(self) -> tuple[dict, dict[str, Tensor]]:
        return {"epoch": self.epoch, "index": self.index}, {}

    def restore_position(self, meta: dict, tensors: dict[str, Tensor]) -> None:
        self.epoch, self.index = meta["epoch"], meta["index"]


@torch.no_grad()
def predict(model: nn.Module, examples: Examples, device: torch.device, batch_size: int = 128) -> Tensor:
    """Logits (or outputs) for every example, in order: ``(N, ...)`` on the CPU, float32."""
    was_training = model.training
    model.eval()
    outs = [model(b.x.to(device), lengths=b.lengths).logits.float().cpu() for b in examples.batches(batch_size)]
    model.train(was_training)
    return torch.cat(outs)


@torch.no_grad()
def evaluate_examples(model: nn.Module, examples: Examples, device: torch.device,
                      batch_size: int = 128) -> tuple[float, float | None]:
    """``(mean loss, accuracy)`` over ``examples``; accuracy is None unless the targets are class ids."""
    was_training = model.training
    model.eval()
    total, correct = 0.0, 0
    for b in examples.batches(batch_size):
        b = b.to(device)
        out = model(b.x, None, b.y, lengths=b.lengths)
        total += out.loss.item() * len(b.y)
        if not b.y.is_floating_point():
            correct += int((out.logits.argmax(-1) == b.y).sum())
    model.train(was_training)
    n = len(examples)
    return total / n, (correct / n if not examples.targets.dtype.kind == "f" else None)


class TaggingTrainer(BatchTrainer):
    """Trains a many-to-many ``SequenceTagger`` on ``TaggedExamples``: the same shuffled mini-batches, budget and
    checkpoints as many-to-one training; the loss, accuracy and validation figures are per tagged step, and the best
    checkpoint is the most accurate one (the lower loss breaking ties)."""

    def __init__(self, model: nn.Module, train, val, config: BatchTrainConfig, run_dir: str | Path,
                 show_progress: bool = True) -> None:
        super().__init__(model, train, val, config, run_dir, classes=True, show_progress=show_progress)

    def validate(self) -> dict:
        loss, accuracy = tagging_figures(self.model, self.val_examples, self.device, self.config.batch_size * 4)
        return {"val_loss": loss, "val_accuracy": accuracy}


@torch.no_grad()
def tagging_figures(model: nn.Module, examples, device: torch.device, batch_size: int = 128) -> tuple[float, float]:
    """``(mean loss, accuracy)`` per tagged step (padding and ``IGNORE_INDEX`` targets left out)."""
    was_training = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    for b in examples.batches(batch_size):
        b = b.to(device)
        out = model(b.x, None, b.y, lengths=b.lengths)
        valid = b.y != IGNORE_INDEX
        k = int(valid.sum())
        total, n = total + out.loss.item() * k, n + k
        correct += int((model.best_tags(out.logits, b.lengths) == b.y)[valid].sum())  # argmax, or a CRF's Viterbi
    model.train(was_training)
    return total / max(n, 1), correct / max(n, 1)


class ConditionedTrainer(BatchTrainer):
    """Trains a one-to-many ``ConditionalGenerator`` on ``ConditionedSequences``: the same shuffled mini-batches,
    budget and checkpoints as many-to-one training; the loss and the validation figure are per predicted token
    (each sequence's end included), and the best checkpoint has the lowest validation loss."""

    def __init__(self, model: nn.Module, train, val, config: BatchTrainConfig, run_dir: str | Path,
                 show_progress: bool = True) -> None:
        super().__init__(model, train, val, config, run_dir, classes=False, show_progress=show_progress)

    def forward(self, batch):
        return self.model(batch.x, None, batch.y, lengths=batch.lengths, condition=batch.condition)

    def validate(self) -> dict:
        return {"val_loss": sequence_nll(self.model, self.val_examples, self.device, self.config.batch_size * 4)}


def sequence_nll(model: nn.Module, sequences, device: torch.device, batch_size: int = 256,
                 unconditioned: bool = False) -> float:
    """Mean negative log-likelihood per predicted token (nats) of ``sequences`` (``ConditionedSequences``) under a
    ``ConditionalGenerator``; ``unconditioned`` scores them with no label (the model's "no label" row)."""
    return _token_nll(model, sequences.batches(batch_size), device, BatchTrainer.tokens, lambda b: model(
        b.x, None, b.y, lengths=b.lengths, condition=None if unconditioned else b.condition))


class TranslationTrainer(BatchTrainer):
    """Trains a ``Seq2Seq`` model on ``Pairs`` (``rnnkit.data.translation``): batches of pairs with similar source
    lengths (little padding), shuffled per epoch; loss and validation per target token; best = lowest loss.
    ``--epochs`` counts ``len(train) // batch_size`` steps an epoch, about the number of length buckets."""

    def __init__(self, model: nn.Module, train, val, config: BatchTrainConfig, run_dir: str | Path,
                 show_progress: bool = True) -> None:
        super().__init__(model, train, val, config, run_dir, classes=False, show_progress=show_progress)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        return self.train_examples.length_batches(self.config.batch_size, self.config.seed, epoch)

    def forward(self, batch):
        return self.model(batch.src, None, batch.tgt_out, lengths=batch.src_lengths, tgt_in=batch.tgt_in)

    tokens = staticmethod(lambda batch: target_tokens(batch))  # predicted tokens: sources are not trained on

    def validate(self) -> dict:
        return {"val_loss": translation_nll(self.model, self.val_examples, self.device, self.config.batch_size)}


def translation_nll(model: nn.Module, pairs, device: torch.device, batch_size: int = 64) -> float:
    """Mean negative log-likelihood per target token (EOS included), teacher-forced."""
    return _token_nll(model, pairs.batches(batch_size), device, target_tokens, lambda b: model(
        b.src, None, b.tgt_out, lengths=b.src_lengths, tgt_in=b.tgt_in))


def target_tokens(batch) -> int:
    """A translation batch's predicted tokens (EOS included, padding not)."""
    return int((batch.tgt_out != IGNORE_INDEX).sum())


@torch.no_grad()
def _token_nll(model: nn.Module, batches, device: torch.device, count, run) -> float:
    """The loss of ``run(batch)`` (a mean over its ``count(batch)`` targets), weighted by them: nats per token."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for b in batches:
        b = b.to(device)
        k = count(b)
        total, n = total + run(b).loss.item() * k, n + k
    model.train(was_training)
    return total / max(n, 1)
