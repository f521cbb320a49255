"""Which device a run trains on."""

from __future__ import annotations

import os

import torch

from rnnkit.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is one GPU for each process torchrun started on this machine, else the CPU;
    asking for CUDA without one is an error, not a silent fallback."""
    if name == "auto":
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return torch.device("cuda" if gpus >= per_machine else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} — use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} but no CUDA device is available — use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r} — use auto, cpu, cuda or cuda:N")
    return device
