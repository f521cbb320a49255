"""Batches of similar length (little padding, still a fresh random order every epoch), and their way to the GPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rnnkit.errors import ConfigError


def length_buckets(keys: Sequence[np.ndarray], batch_size: int, seed: int, epoch: int,
                   chunk_batches: int = 50) -> list[np.ndarray]:
    """Index batches of items of similar length: shuffle, sort chunks of ``chunk_batches`` batches by ``keys``
    (the first key most significant, e.g. source then target length), cut them, shuffle the batches. Every item
    once; the same batches for the same (seed, epoch)."""
    if batch_size <= 0:
        raise ConfigError(f"batch size must be positive (got {batch_size}) — e.g. 64")
    rng = np.random.default_rng([seed, epoch])
    order, out = rng.permutation(len(keys[0])), []
    for c in range(0, len(order), batch_size * chunk_batches):
        chunk = order[c:c + batch_size * chunk_batches]
        chunk = chunk[np.lexsort(tuple(k[chunk] for k in reversed(keys)))]
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for a GPU goes through pinned memory without waiting for the GPU.

    A copy from ordinary (pageable) memory first waits for every kernel already queued, so the CPU could not prepare
    the next training step while the GPU runs this one; from pinned memory the copy is queued like a kernel (torch's
    pinned-memory cache keeps the buffer until the copy is done).
    """
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
