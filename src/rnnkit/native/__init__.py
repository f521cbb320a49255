"""Native kernels: C compiled on first use by the system's C compiler, loaded with ctypes.

Only for the two places where PyTorch's per-op overhead is the cost itself:
- ``lstm.c``: sampling a recurrent language model token by token at small batch, where a step is a dozen tiny ops
  (~3 µs of dispatch each) and torch's int8 matrix product spends ~35 µs of fixed cost per call at batch 1
  (measured in BENCHMARKS.md). It runs a whole step, and a whole run of sampled tokens, in one call.
- ``lnlstm.c``: training a layer-normalised LSTM, which no fused kernel computes. Between two of a step's matrix
  products (which stay torch's) autograd runs ~30 small ops and passes over memory; it does them in one pass each
  way (``rnnkit.native.lnlstm``).
Both build into one library.

The library is built with ``-O3 -march=native`` for this machine and cached under ``$RNNKIT_CACHE`` (default
``~/.cache/rnnkit``), keyed by the source, the flags, the compiler and the CPU's feature flags, and written
atomically. With no compiler, or with ``RNNKIT_NATIVE=0``, ``library()`` returns None (``unavailable()`` says
why) and callers use their PyTorch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

SOURCES = (Path(__file__).with_name("lstm.c"), Path(__file__).with_name("lnlstm.c"))
# Compiled with -ffast-math (vector expf, reassociated sums) but linked without it: linking with it would add
# crtfastmath.o, which switches the whole process's floating point to flush denormals to zero when loaded.
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-std=c11"]
# lnlstm.c's passes and lstm.c's large products split their rows among OpenMP threads. Linked against libgomp.so.1,
# the runtime torch's CPU build has already loaded, so the two share one pool of threads. A compiler without OpenMP
# builds without it.
OPENMP = ["-fopenmp"]
MAX_LAYERS = 16  # as in lstm.c


def cache_dir() -> Path:
    root = os.environ.get("RNNKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rnnkit")
    return Path(root) / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln]
    return (errors or lines or ["the compiler failed"])[0]


def _compile(compiler: list[str], extra: list[str], objs: list[str], out: str) -> None:
    compile_each = [[*compiler, *FLAGS, *extra, "-c", str(source), "-o", obj]
                    for source, obj in zip(SOURCES, objs, strict=True)]
    for argv in [*compile_each, [*compiler, "-shared", *extra, *objs, "-o", out, "-lm"]]:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise OSError(_error(done.stderr))


def _build(compiler: list[str], force: bool = False) -> Path:
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    texts = [source.read_text() for source in SOURCES]
    key = hashlib.sha256("\0".join([*texts, " ".join(FLAGS + OPENMP), version, platform.machine(),
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    out = cache_dir() / f"lstm-{key}.so"
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
    os.close(fd)
    objs = [tmp[: -len(".so.tmp")] + f"-{source.stem}.o" for source in SOURCES]
    try:
        try:
            _compile(compiler, OPENMP, objs, tmp)
        except OSError:
            _compile(compiler, [], objs, tmp)
        os.chmod(tmp, 0o755)  # mkstemp made it 0600: loadable by whoever shares the cache
        os.replace(tmp, out)  # atomic: a concurrent build of the same key writes the same bytes
    finally:
        for path in (tmp, *objs):
            if os.path.exists(path):
                os.unlink(path)
    return out


_reason: list[str] = []
_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_LNLSTM_ARGTYPES = {  # lnlstm.c
    "rnnkit_lnlstm_forward": [_I, _I, _P, _I, _P, _I, _P, _P, _P, _P, _F, _F, _P, _P, _P, _P, _P, _P, _P, _P, _P,
                              _I, _P],
    "rnnkit_lnlstm_backward": [_I, _I, _P, _I, _P, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I, _P, _I, _P, _I],
    "rnnkit_lnlstm_threads": [],
}


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot be had (see ``unavailable``)."""
    _reason.clear()
    if os.environ.get("RNNKIT_NATIVE", "1") == "0":
        _reason.append("RNNKIT_NATIVE=0")
        return None
    compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc") or ""]
    if not compiler[0] or shutil.which(compiler[0]) is None:
        _reason.append("no C compiler (install gcc, or set CC)")
        return None
    try:
        path = _build(compiler)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # a cached library that does not load (truncated, or another machine's): build it again
            lib = ctypes.CDLL(str(_build(compiler, force=True)))
    except (OSError, subprocess.SubprocessError) as e:
        _reason.append(f"building {' and '.join(s.name for s in SOURCES)} failed: {e}")
        return None
    for name in ("rnnkit_lstm_step", "rnnkit_lstm_generate", "rnnkit_filter_probs", *_LNLSTM_ARGTYPES):
        getattr(lib, name).restype = ctypes.c_int
    for name, types in _LNLSTM_ARGTYPES.items():  # called per time step: declared, so ctypes converts without guessing
        getattr(lib, name).argtypes = types
    return lib


def unavailable() -> str | None:
    """Why ``library()`` is None, or None when it is available."""
    return None if library() is not None else "; ".join(_reason) or "unknown"
