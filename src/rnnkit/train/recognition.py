"""The trainer for CTC recognisers: length-bucketed batches of frame sequences, CTC loss per character, and the
character error rate of greedy decoding on the validation split, which picks the best checkpoint. Optional
SpecAugment-style masking of feature bands and runs of frames while training (``mask_frames``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.train.batches import BatchTrainConfig, BatchTrainer


@dataclass
class RecognitionTrainConfig(BatchTrainConfig):
    """A recogniser's training run: the batch trainer's settings and the masking of training frames (SpecAugment:
    Park et al., 2019). Masks are training-time augmentation, so a resumed run may change them."""

    freq_masks: int = field(default=0, metadata={
        "help": "bands of features (mel bands, image rows) masked in each training input (SpecAugment; 0: none)"})
    freq_mask_width: int = field(default=15, metadata={"help": "widest masked band of features"})
    time_masks: int = field(default=0, metadata={"help": "runs of frames masked in each training input (0: none)"})
    time_mask_width: int = field(default=20, metadata={
        "help": "longest masked run of frames (at most a fifth of the input)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(self, name)}) — 0 masks "
                                  "nothing")


def mask_frames(x: Tensor, lengths: Tensor, fill: Tensor, freq_masks: int, freq_width: int, time_masks: int,
                time_width: int) -> Tensor:
    """``x (B, T, C)`` with, per input, ``freq_masks`` bands of features of width uniform in [0, freq_width] and
    ``time_masks`` runs of frames of width uniform in [0, min(time_width, length // 5)] set to ``fill (C,)`` (the
    training mean: zero once standardised). Masks lie within each input's ``lengths``; padding is left as it was.
    Positions come from torch's global generator, so a resumed run masks as an uninterrupted one would."""
    B, T, C = x.shape
    masked = torch.zeros(B, T, C, dtype=torch.bool)
    bands = torch.arange(C)
    for _ in range(freq_masks):
        width = torch.randint(0, min(freq_width, C) + 1, (B,))
        start = (torch.rand(B) * (C - width + 1)).long()
        masked |= ((bands >= start[:, None]) & (bands < (start + width)[:, None]))[:, None, :]
    steps, lengths = torch.arange(T), lengths.cpu()
    longest = torch.minimum(torch.full((B,), time_width), lengths // 5)
    for _ in range(time_masks):
        width = (torch.rand(B) * (longest + 1)).long()
        start = (torch.rand(B) * (lengths - width + 1)).long()
        masked |= ((steps >= start[:, None]) & (steps < (start + width)[:, None]))[:, :, None]
    masked &= (steps < lengths[:, None])[:, :, None]
    return torch.where(masked.to(x.device), fill.to(x.dtype), x)


class RecognitionTrainer(BatchTrainer):
    """Trains a ``CTCRecognizer`` on ``Utterances`` (``rnnkit.data.recognition``); ``alphabet`` turns class ids
    back into text for the validation CER. ``--epochs`` counts ``len(train) // batch_size`` steps an epoch."""

    extra_metrics = ("val_cer",)

    def __init__(self, model: nn.Module, train, val, alphabet, config: RecognitionTrainConfig, run_dir: str | Path,
                 show_progress: bool = True) -> None:
        super().__init__(model, train, val, config, run_dir, classes=False, show_progress=show_progress)
        self.alphabet = alphabet

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        return self.train_examples.length_batches(self.config.batch_size, self.config.seed, epoch)

    def forward(self, batch):
        x, c = batch.x, self.config
        if self.model.training and (c.freq_masks or c.time_masks):
            x = mask_frames(x, batch.lengths, self.model.input_mean, c.freq_masks, c.freq_mask_width, c.time_masks,
                            c.time_mask_width)
        return self.model(x, None, batch.targets, lengths=batch.lengths, target_lengths=batch.target_lengths)

    @staticmethod
    def tokens(batch) -> int:
        """Input frames (lengths live on the CPU: counting them never waits for a GPU)."""
        return int(batch.lengths.sum())

    def validate(self) -> dict:
        from rnnkit.recognize import transcribe

        result = transcribe(self.model, self.val_examples, self.alphabet, self.device, self.config.batch_size * 2)
        return {"val_loss": result.loss, "val_cer": result.rates["cer"]}

    def selection_key(self, figures: dict) -> tuple[float, ...]:
        """The lowest character error rate, the loss breaking ties: what a user of a recogniser reads."""
        return (figures["val_cer"], figures["val_loss"])


def scaling_of(frames: list[np.ndarray], max_frames: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the training frames (of a seeded sample of utterances holding
    about ``max_frames`` frames, when there are more)."""
    order = np.random.default_rng(0).permutation(len(frames))
    mean_length = max(1, int(np.mean([len(f) for f in frames])))
    picked = np.concatenate([frames[i] for i in order[: max(1, max_frames // mean_length)]])
    return picked.mean(0), picked.std(0)
