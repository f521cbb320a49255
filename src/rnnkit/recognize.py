"""Using a CTC recogniser: transcripts of many utterances (greedy or beam search), their error rates, and the
picture of where each character was emitted.

``transcribe`` runs the model over ``Utterances`` in batches and decodes every item; with references it also
returns the mean CTC loss per character and the corpus-level character and word error rates (``rnnkit.ctc``).
``plot_alignment`` draws an input (an image's pixels, or a log-mel spectrogram) with the best path under it: each
output step's most likely class, characters placed at the frames that emitted them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnnkit import ctc


@dataclass
class Transcripts:
    """Decoded ``texts``; per item its best ``paths`` (class per output step); with references, ``loss`` (CTC per
    character) and ``rates`` (``cer``, ``wer``, ...)."""

    texts: list[str]
    paths: list[list[int]]
    loss: float | None = None
    rates: dict = field(default_factory=dict)


@torch.no_grad()
def transcribe(model: nn.Module, utterances, alphabet, device: torch.device | str = "cpu", batch_size: int = 64,
               beam: int | None = None, references: bool = True) -> Transcripts:
    """Decode every utterance (greedy, or prefix beam search with ``beam`` prefixes); score against the
    utterances' own transcripts when ``references``."""
    was_training = model.training
    model.eval()
    texts, paths, total, count = [], [], 0.0, 0
    for b in utterances.batches(batch_size):
        out = model(b.x.to(device), lengths=b.lengths,
                    targets=b.targets.to(device) if references else None,
                    target_lengths=b.target_lengths if references else None)
        steps = model.output_lengths(b.lengths).clamp_min(1)
        log_probs = out.logits.float().cpu()
        paths += ctc.best_path(log_probs, steps)
        ids = ctc.beam_decode(log_probs, steps, beam=beam) if beam and beam > 1 else ctc.greedy_decode(log_probs, steps)
        texts += [alphabet.decode(x) for x in ids]
        if references:
            total, count = total + out.loss.item() * len(b.lengths), count + len(b.lengths)
    model.train(was_training)
    result = Transcripts(texts, paths)
    if references:
        result.loss = total / max(count, 1)
        result.rates = ctc.error_rates(utterances.texts, texts)
    return result


def plot_alignment(frames: np.ndarray, path: list[int], alphabet, stride: int, out: str | Path, title: str = "",
                   kind: str = "handwriting") -> Path:
    """The input (``frames`` (T, C): rows of an image, or mel bands over time) with the best path under it: each
    non-blank step's character at the frames it covers; a repeated character is drawn once per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(frames)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, min(40.0, T / 40)), 3.2), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.imshow(frames.T, aspect="auto", origin="lower" if kind == "speech" else "upper",
               cmap="magma" if kind == "speech" else "gray_r", extent=(0, T, 0, frames.shape[1]))
    top.set_yticks([])
    top.set_title(title, fontsize=9, loc="left")
    previous = 0
    for step, cls in enumerate(path):
        x0 = step * stride
        if cls != 0:
            bottom.axvspan(x0, x0 + stride, color="tab:orange" if cls != previous else "tab:olive", alpha=0.35, lw=0)
            if cls != previous:
                top.axvline(x0 + stride / 2, color="tab:orange", lw=0.6, alpha=0.8)
                bottom.text(x0 + stride / 2, 0.5, alphabet.chars[cls - 1] if alphabet.chars[cls - 1] != " " else "␣",
                            ha="center", va="center", fontsize=9, family="monospace")
        previous = cls
    bottom.set_ylim(0, 1)
    bottom.set_yticks([])
    bottom.set_xlim(0, T)
    bottom.set_xlabel(f"input frame (one output step = {stride} frames; shaded: a character's steps, blank: none)")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
