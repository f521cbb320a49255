"""The process's heap: keep freed memory for the next training step instead of giving it back to the system.

glibc's malloc serves a large block with a fresh ``mmap`` and unmaps it when it is freed; "large" starts at
128 KB and adapts upward as such blocks are freed, but never past 32 MB. A training step allocates and frees
many larger blocks (a window's activations, gradients and work buffers are 16-64 MB each), so every step maps
fresh pages again, and the first write to each 4 KB page faults. Measured on the 2-core machine (BENCHMARKS.md,
"The layer-normalised LSTM, and the heap"): the fused 2x512 LSTM's training step took 0.488 s against 0.603 s
with glibc's defaults (4 page faults per step against 86,402); the layer-normalised LSTM's 0.658 s against 0.850 s.

``keep_freed_memory`` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB, so freed blocks stay
in the heap for the next step: the effect PyTorch's CPU tuning guides get by preloading jemalloc or tcmalloc.
Resident memory then stays at its peak between steps, and the peak grows, since a freed block that the next
allocation does not fit stays in the heap: 801 MiB against 638 for that LSTM, 1,127 against 1,025 for the LN-LSTM.
The command line calls it once per process; a program that uses rnnkit as a library decides for
itself. ``RNNKIT_KEEP_HEAP=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 1 << 30  # blocks under 1 GiB come from the heap
TRIM_THRESHOLD = 2**31 - 1  # and the free top of the heap is handed back only past 2 GiB (the most an int holds)


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; True where it took effect (Linux with glibc, not
    switched off), False elsewhere, where nothing changes."""
    if os.environ.get("RNNKIT_KEEP_HEAP", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): its allocator stays as it is
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
