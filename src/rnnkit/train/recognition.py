"""The trainer for CTC recognisers: length-bucketed batches of frame sequences, CTC loss per character, and the
character error rate of greedy decoding on the validation split, which picks the best checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from rnnkit.train.batches import BatchTrainConfig, BatchTrainer


class RecognitionTrainer(BatchTrainer):
    """Trains a ``CTCRecognizer`` on ``Utterances`` (``rnnkit.data.recognition``); ``alphabet`` turns class ids
    back into text for the validation CER. ``--epochs`` counts ``len(train) // batch_size`` steps an epoch."""

    extra_metrics = ("val_cer",)

    def __init__(self, model: nn.Module, train, val, alphabet, config: BatchTrainConfig, run_dir: str | Path,
                 show_progress: bool = True) -> None:
        super().__init__(model, train, val, config, run_dir, classes=False, show_progress=show_progress)
        self.alphabet = alphabet

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        return self.train_examples.length_batches(self.config.batch_size, self.config.seed, epoch)

    def forward(self, batch):
        return self.model(batch.x, None, batch.targets, lengths=batch.lengths, target_lengths=batch.target_lengths)

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
