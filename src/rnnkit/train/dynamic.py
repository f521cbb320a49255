"""Dynamic evaluation: a language model that keeps learning from the text it is scoring.

Krause, Kahembwe, Murray & Renals, "Dynamic Evaluation of Neural Sequence Models" (ICML 2018). The text is read
as one stream in windows of ``window`` tokens, the hidden state carried across them. Each window is scored
first, with the weights as they stand, and only then used for one update, so no token is ever predicted by weights
that have seen it. The update is their "RMS" rule: the gradient is divided by the root mean square of the
gradients the trained model gets on its training text, and the weights decay back toward the trained ones at a rate
proportional to that same scale (capped at one),

    theta <- theta - lr * g / rms + decay * min(rms / mean(rms), 1 / decay) * (theta_0 - theta).

The result is a different measure from the static loss ``evaluate`` gives: the model adapts to the style and
vocabulary of the text as it goes, as a compressor would. Both are reported side by side, never one for the other.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from rnnkit.data.streams import IGNORE_INDEX, Streams
from rnnkit.errors import ConfigError
from rnnkit.train.tbptt import detach_state

RMS_FLOOR = 1e-2  # of the mean rms over all weights; about 1% of a trained character model's weights lie below


@dataclass(frozen=True)
class DynamicConfig:
    """The update rule's settings; the defaults were picked on the first half of Tiny Shakespeare's validation text."""

    lr: float = 3e-4
    decay: float = 3e-3
    window: int = 50
    stats_tokens: int = 100_000  # training tokens over which the gradients' mean square is taken

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"the dynamic-evaluation learning rate must be positive (got {self.lr}) — "
                              "pass --dynamic-lr such as 3e-4")
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"the dynamic-evaluation decay must be in [0, 1) (got {self.decay}) — "
                              "pass --dynamic-decay such as 3e-3, or 0 for none")
        if self.window < 1:
            raise ConfigError(f"the dynamic-evaluation window must be at least 1 token (got {self.window}) — "
                              "pass --dynamic-window such as 50")
        if self.stats_tokens < 2:
            raise ConfigError(f"the gradient scale needs at least 2 training tokens (got {self.stats_tokens}) — "
                              "pass stats_tokens such as 100000")


def _windows(model: nn.Module, tokens: np.ndarray, window: int, device: torch.device, bar: tqdm | None = None):
    """``(loss, targets)`` of each window of one stream over ``tokens``, the state carried; the caller steps in
    between, after the loss is read and before the next window is run."""
    batches = Streams(tokens, 1, window)
    state = None
    for k in range(len(batches)):
        x, y = (t.to(device) for t in batches.window(k))
        out = model(x, state, y)
        state = detach_state(out.state)
        yield out.loss, int((y != IGNORE_INDEX).sum())
        if bar is not None:
            bar.update(1)


def gradient_rms(model: nn.Module, tokens: np.ndarray, window: int, device: torch.device,
                 bar: tqdm | None = None) -> list[Tensor]:
    """Per parameter, the root mean square over the windows of ``tokens`` of the gradient of the window's mean loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    squares = [torch.zeros_like(p) for p in params]
    count = 0
    for loss, _ in _windows(model, tokens, window, device, bar):
        for s, g in zip(squares, torch.autograd.grad(loss, params), strict=True):
            s.addcmul_(g, g)
        count += 1
    return [(s / count).sqrt_() for s in squares]


def dynamic_evaluate(model: nn.Module, tokens: np.ndarray, train_tokens: np.ndarray, device: torch.device,
                     config: DynamicConfig = DynamicConfig(), progress: bool = False) -> float:
    """Mean next-token loss (nats) over every target of ``tokens``, scored as the model adapts to them.

    ``train_tokens[:config.stats_tokens]`` gives the gradient scale. ``model`` itself is left as it was: the
    adaptation happens on a copy, in fp32 and in eval mode (no dropout). ``progress`` draws a bar on a terminal.
    """
    if len(tokens) < 2 or len(train_tokens) < 2:
        raise ConfigError("dynamic evaluation needs at least 2 tokens of text and of training text — "
                          "pass a longer corpus")
    stats_tokens = train_tokens[:config.stats_tokens]
    windows = sum(len(Streams(t, 1, config.window)) for t in (stats_tokens, tokens))
    # cuDNN's RNN backward refuses a model in eval mode; PyTorch's own CUDA kernels take it (CPU: no effect)
    with tqdm(total=windows, unit="window", desc="dynamic evaluation", file=sys.stderr, dynamic_ncols=True,
              disable=None if progress else True) as bar, torch.backends.cudnn.flags(enabled=False):
        return _adapt(model, tokens, stats_tokens, device, config, bar)


def _adapt(model: nn.Module, tokens: np.ndarray, stats_tokens: np.ndarray, device: torch.device,
           config: DynamicConfig, bar: tqdm) -> float:
    learner = copy.deepcopy(model).float().eval()
    params = [p for p in learner.parameters() if p.requires_grad]
    rms = gradient_rms(learner, stats_tokens, config.window, device, bar)
    mean_rms = torch.cat([r.flatten() for r in rms]).mean()
    # A weight the training text never moved (the embedding of a character it lacks) has rms 0: the floor keeps
    # its first gradient from being divided by nothing.
    scale = [1.0 / r.clamp(min=RMS_FLOOR * mean_rms) for r in rms]
    pull = [torch.clamp(r / mean_rms, max=1.0 / config.decay) * config.decay if config.decay > 0 else None
            for r in rms]
    trained = [p.detach().clone() for p in params]
    total, count = 0.0, 0
    for loss, n in _windows(learner, tokens, config.window, device, bar):
        total, count = total + loss.item() * n, count + n
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, s, w, p0 in zip(params, grads, scale, pull, trained, strict=True):
                step = g * s * -config.lr
                if w is not None:  # the pull is taken from the weights before this step, as in the paper
                    step += w * (p0 - p)
                p.add_(step)
    return total / count
