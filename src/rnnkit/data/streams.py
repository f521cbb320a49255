"""Stateful TBPTT batching: B parallel streams cut from one token array, served as windows of T.

Row b of window k+1 continues row b of window k, so a trainer that carries the recurrent state from one window
to the next gives every position the whole history of its stream, while gradients stop at the window edge.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100  # target value that contributes no loss (past the end of a stream, padding)



class Streams:
    """Cut ``tokens`` into ``batch_size`` contiguous streams (lengths differ by at most one) of next-token pairs.

    ``window(k) -> (x (B, T'), y (B, T'))`` with ``T' <= seq_len`` (the last window may be short). Every one of
    the ``len(tokens) - 1`` targets is served exactly once; targets past the end of a shorter stream are
    ``IGNORE_INDEX``.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int) -> None:
        n_targets = len(tokens) - 1
        if batch_size <= 0 or seq_len <= 0:
            raise ValueError("batch_size and seq_len must be positive")
        if n_targets < batch_size:
            raise ValueError(f"{len(tokens)} tokens cannot fill {batch_size} streams")
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        base, extra = divmod(n_targets, batch_size)
        self.lengths = np.full(batch_size, base, dtype=np.int64)
        self.lengths[:extra] += 1
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.num_windows = -(-int(self.lengths.max()) // seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def window(self, k: int) -> tuple[Tensor, Tensor]:
        if not 0 <= k < self.num_windows:
            raise IndexError(k)
        p = k * self.seq_len
        T = min(self.seq_len, int(self.lengths.max()) - p)
        t = p + np.arange(T)  # position within each stream
        valid = t[None, :] < self.lengths[:, None]  # (B, T)
        idx = np.where(valid, self.starts[:, None] + t[None, :], 0)
        x = torch.from_numpy(self.tokens[idx].astype(np.int64))  # (B, T)
        y = torch.from_numpy(np.where(valid, self.tokens[idx + 1].astype(np.int64), IGNORE_INDEX))
        return x, y
