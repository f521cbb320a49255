"""``rnnkit.heap.keep_freed_memory``: freed blocks of a training step's size are reused, not mapped afresh."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnnkit.heap import keep_freed_memory

# Mallocs, writes and frees a 64 MB block, then does it again, and prints the page faults of the second round:
# 16,384 (one per 4 KB page) when the first block went back to the system, ~0 when the heap kept it.
FAULTS = """
import ctypes, resource
from rnnkit.heap import keep_freed_memory
print(keep_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def block():
    p = libc.malloc(64 << 20)
    libc.memset(p, 1, 64 << 20)
    libc.free(p)
block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(env_value: str) -> tuple[str, int]:
    env = {"RNNKIT_KEEP_HEAP": env_value, "PATH": ""}
    done = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    took, count = done.stdout.split()
    return took, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is tuned on Linux only")
def test_a_freed_block_is_reused_without_page_faults():
    took, kept = faults("1")
    assert took == "True" and kept < 1_000
    took, default = faults("0")
    assert took == "False" and default > 10_000  # glibc's default: a fresh mapping, one fault per page


def test_switched_off_it_changes_nothing(monkeypatch):
    monkeypatch.setenv("RNNKIT_KEEP_HEAP", "0")
    assert keep_freed_memory() is False
