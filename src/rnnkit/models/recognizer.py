"""Many-to-many without alignment: frames in, a shorter string of characters out, trained with CTC.

Shape letters: B batch, T input frames, C features per frame (image rows, mel bands), T' output steps
(T // time_stride), H hidden units, D directions, K classes (the CTC blank, class 0, and the characters).

``CTCRecognizer``: standardised frames -> front end -> bidirectional recurrent stack -> per-step class
log-probabilities, trained with ``torch.nn.functional.ctc_loss``. Front ends:

- ``conv``: two blocks of 3x3 convolution, batch norm, ReLU and max pooling over the (C, T) plane — a frame's
  neighbours in both directions shape its features, and height/frequency is halved twice; time is pooled by
  ``time_stride`` (1, 2 or 4). The feature map of each output step (channels x C/4) is projected to H.
- ``none``: ``time_stride`` adjacent frames stacked into one step (a stride without any convolution).

Padding never changes an output: frames past a sequence's length are zeroed before every block (the convolution's
own zero padding sees the same zeros at a true end), pooling keeps only whole windows, and the recurrent stack
packs by length. A step count below the transcript's length makes CTC impossible; such an item's loss is zero
(``zero_infinity``) rather than infinite, and training goes on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.errors import ConfigError
from rnnkit.models.output import Output, check_recurrent_config
from rnnkit.nn.cells import CELL_TYPES, State
from rnnkit.nn.recurrent import Recurrent

FRONTENDS = ("conv", "none")
_POOLS = {1: (1, 1), 2: (2, 1), 4: (2, 2)}  # time_stride -> time pooling of the two conv blocks


@dataclass
class CTCRecognizerConfig:
    """A recogniser's architecture; saved in config.json. CLI flags come from the fields with help."""

    input_size: int = field(default=0, metadata={"cli": False})
    num_classes: int = field(default=0, metadata={"cli": False})
    frontend: str = field(default="conv", metadata={"help": "conv (2-D convolutions over the frames) or none"})
    conv_channels: int = field(default=32, metadata={"help": "channels of the first conv block (the second: twice)"})
    time_stride: int = field(default=2, metadata={"help": "input frames per output step: 1, 2 or 4"})
    cell: str = field(default="lstm", metadata={"help": f"recurrent cell: {', '.join(CELL_TYPES)}"})
    hidden_size: int = field(default=192, metadata={"help": "hidden units per layer and direction (H)"})
    num_layers: int = field(default=3, metadata={"help": "stacked recurrent layers"})
    bidirectional: bool = field(default=True, metadata={"help": "read the frames both ways"})
    dropout: float = field(default=0.2, metadata={"help": "dropout after the front end, between layers, at the head"})
    path: str = field(default="auto", metadata={"help": "recurrent path: auto (fused when possible), fused, explicit"})
    embedding_size: int = field(default=1, metadata={"cli": False})  # no embedding; kept for the shared checks

    def __post_init__(self) -> None:
        check_recurrent_config(self)
        if self.input_size <= 0 or self.num_classes < 2:
            raise ConfigError(f"a recogniser needs input_size > 0 and at least 2 classes (got {self.input_size}, "
                              f"{self.num_classes})")
        if self.frontend not in FRONTENDS:
            raise ConfigError(f"unknown front end {self.frontend!r} — use one of {', '.join(FRONTENDS)}")
        if self.time_stride not in _POOLS:
            raise ConfigError(f"time_stride must be 1, 2 or 4 (got {self.time_stride}) — pass --time-stride 2")
        if self.conv_channels <= 0:
            raise ConfigError(f"conv_channels must be positive (got {self.conv_channels})")
        if self.frontend == "conv" and self.input_size < 4:
            raise ConfigError(f"the conv front end halves the {self.input_size} features twice — use --frontend none")

    def to_dict(self) -> dict:
        return asdict(self)


def _mask_time(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Zero the steps past each length (whatever they hold, NaN too); time is the last dimension of ``x``."""
    if lengths is None:
        return x
    keep = torch.arange(x.shape[-1], device=x.device) < lengths.to(x.device)[:, None]  # (B, T)
    return torch.where(keep.view(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1]), x, 0.0)


class _ConvFrontEnd(nn.Module):
    def __init__(self, c: CTCRecognizerConfig) -> None:
        super().__init__()
        ch = (c.conv_channels, 2 * c.conv_channels)
        self.pools = _POOLS[c.time_stride]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
            for i, o in ((1, ch[0]), ch)
        )
        self.proj = nn.Linear(ch[1] * (c.input_size // 4), c.hidden_size)

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        h = x.transpose(1, 2).unsqueeze(1)  # (B, 1, C, T)
        for block, pool in zip(self.blocks, self.pools, strict=True):
            h = _mask_time(block(_mask_time(h, lengths)), lengths)
            h = F.max_pool2d(h, (2, pool))
            lengths = None if lengths is None else lengths // pool
        B, ch, C, T = h.shape
        return F.relu(self.proj(h.permute(0, 3, 1, 2).reshape(B, T, ch * C))), lengths


class CTCRecognizer(nn.Module):
    """Frames ``(B, T, C)`` -> ``Output(logits=(B, T', K) log-probabilities, loss, state)``; see the module docstring.

    Frames are standardised inside the model with statistics of the training data (``set_scaling``), saved with the
    weights, so a checkpoint takes raw frames.
    """

    def __init__(self, config: CTCRecognizerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.register_buffer("input_mean", torch.zeros(c.input_size))
        self.register_buffer("input_std", torch.ones(c.input_size))
        if c.frontend == "conv":
            self.frontend = _ConvFrontEnd(c)
            size = c.hidden_size
        else:
            self.frontend = None
            size = c.input_size * c.time_stride
        self.drop = nn.Dropout(c.dropout)
        self.rnn = Recurrent(c.cell, size, c.hidden_size, c.num_layers, bidirectional=c.bidirectional,
                             dropout=c.dropout, path=c.path)
        self.head = nn.Linear(c.hidden_size * (2 if c.bidirectional else 1), c.num_classes)

    def set_scaling(self, mean, std) -> None:
        self.input_mean.copy_(torch.as_tensor(mean, dtype=self.input_mean.dtype))
        self.input_std.copy_(torch.as_tensor(std, dtype=self.input_std.dtype).clamp_min(1e-3))

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Output steps of inputs of ``lengths`` frames."""
        return lengths // self.config.time_stride

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None,
                lengths: Tensor | None = None, target_lengths: Tensor | None = None) -> Output:
        B, T, C = x.shape
        if C != self.config.input_size:
            raise ConfigError(f"frames have {C} features but the model reads {self.config.input_size} — use frames "
                              "made like its training data")
        if T < self.config.time_stride:
            raise ConfigError(f"{T} frames are fewer than one output step ({self.config.time_stride} frames) — "
                              "give longer inputs")
        x = (x - self.input_mean) / self.input_std
        if lengths is not None:
            x = _mask_time(x.transpose(1, 2), lengths).transpose(1, 2)
        if self.frontend is not None:
            h, out_lengths = self.frontend(x, lengths)
        else:
            s = self.config.time_stride
            h = x[:, :T // s * s].reshape(B, T // s, s * C)
            out_lengths = None if lengths is None else lengths // s
        if out_lengths is not None:
            out_lengths = out_lengths.clamp_min(1)
        y, state = self.rnn(self.drop(h), state, lengths=out_lengths)
        logits = self.head(self.drop(y))
        log_probs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # (B, T', K)
        loss = None
        if targets is not None:
            if target_lengths is None:
                raise ConfigError("CTC needs target_lengths with targets")
            steps = out_lengths if out_lengths is not None else torch.full((B,), h.shape[1], dtype=torch.long)
            loss = F.ctc_loss(log_probs.transpose(0, 1), targets, steps.cpu(), target_lengths.cpu(), blank=0,
                              reduction="mean", zero_infinity=True)
        return Output(log_probs, loss, state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
