"""What a training run is configured with: its optimisation, budget and bookkeeping (``LoopConfig``, which task
trainers extend and whose fields become CLI flags), and the optimizer it builds (``build_optimizer``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from rnnkit.errors import ConfigError


@dataclass
class LoopConfig:
    """Optimisation, budget and bookkeeping of a run; task trainers extend it. CLI flags are derived from it."""

    batch_size: int = field(default=64, metadata={"help": "sequences per update (B)"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW)"})
    min_lr_ratio: float = field(default=0.05, metadata={"help": "final learning rate as a fraction of --lr"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay on weight matrices"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm at this value; 0 turns it off"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many updates"})
    minutes: float | None = field(default=None, metadata={"help": "stop after this much wall time"})
    eval_interval: int = field(default=100, metadata={"help": "validate and checkpoint every N steps"})
    log_interval: int = field(default=10, metadata={"help": "write a metrics.csv row every N steps"})
    seed: int = field(default=1337, metadata={"help": "random seed (initialisation, dropout, data order)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(default="bf16", metadata={
        "help": "fp32, or bf16 (autocast: bfloat16 matrix products in training and validation; fp32 weights and "
                "optimizer; rnnkit eval scores in fp32)"})
    ema: float = field(default=0.0, metadata={
        "help": "keep an exponential moving average of the weights with this decay (e.g. 0.999); validation, "
                "checkpoints and samples use it; 0 for none"})

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_interval", "log_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive (got {getattr(self, name)})")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive (got {self.lr})")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("warmup_steps, weight_decay and grad_clip must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps must be positive (got {self.max_steps})")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"minutes must be positive (got {self.minutes})")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r} — use fp32 or bf16")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1) (got {self.ema}) — e.g. 0.999, or 0 for none")

    def to_dict(self) -> dict:
        return asdict(self)


def build_optimizer(model: nn.Module, config: LoopConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (embedding, recurrent and head weights), none on biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99))
