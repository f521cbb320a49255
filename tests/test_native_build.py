"""rnnkit.native's library itself: switched off, built without OpenMP, sharing torch's OpenMP runtime, a failing
compiler, the build cache, a cached library that does not load, and the process's floating point left alone."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import require_tool
from test_native_sampling import lstm_model

from rnnkit import native
from rnnkit.generate import generate
from rnnkit.native.sampler import NativeLSTM


@pytest.fixture(autouse=True)
def kernels():
    require_tool(native.library() is not None, f"the native kernels are unavailable: {native.unavailable()}",
                 "RNNKIT_REQUIRE_COMPILER")


@pytest.fixture
def fresh_library(monkeypatch):
    native.library.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    native.library.cache_clear()


def test_switched_off_falls_back_to_torch(fresh_library):
    fresh_library.setenv("RNNKIT_NATIVE", "0")
    assert native.library() is None and native.unavailable() == "RNNKIT_NATIVE=0"
    model = lstm_model()
    assert NativeLSTM.for_model(model) is None
    assert generate(model, [1], 10, temperature=0).shape == (1, 10)


def test_a_compiler_without_openmp_builds_the_passes_single_threaded(fresh_library, tmp_path):
    fresh_library.setenv("RNNKIT_CACHE", str(tmp_path))
    fresh_library.setattr(native, "OPENMP", ["-fno-such-openmp-flag"])
    lib = native.library()
    assert lib is not None and lib.rnnkit_lnlstm_threads() == 1


def test_the_kernels_share_torchs_openmp_runtime():
    """One libgomp in a fresh process once the kernels are loaded (here other packages may have brought their own):
    the kernels' threads are torch's, not a second pool competing for the cores."""
    code = ("import torch; from rnnkit import native; lib = native.library(); "
            "assert lib.rnnkit_lnlstm_threads() == torch.get_num_threads(); "
            "print(sorted({line.split()[-1] for line in open('/proc/self/maps') if 'libgomp' in line}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    runtimes = eval(done.stdout)
    assert len(runtimes) == 1 and "torch" in runtimes[0], runtimes


def test_a_failing_compiler_falls_back(fresh_library, tmp_path):
    fresh_library.setenv("RNNKIT_CACHE", str(tmp_path))
    fresh_library.setenv("CC", "false")
    assert native.library() is None and "building lstm.c and lnlstm.c failed" in native.unavailable()
    assert list(tmp_path.rglob("*")) == [tmp_path / "native"]  # nothing half-written left behind


def test_the_build_is_cached_by_machine_and_source(fresh_library, tmp_path):
    fresh_library.setenv("RNNKIT_CACHE", str(tmp_path))
    lib = native.library()
    assert lib is not None and native.unavailable() is None
    built = list((tmp_path / "native").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    native.library.cache_clear()
    assert native.library() is not None and list((tmp_path / "native").iterdir()) == built
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert built[0].stat().st_mode & 0o777 == 0o755  # loadable by whoever shares the cache
    changed = tmp_path / "lnlstm.c"
    changed.write_text(native.SOURCES[1].read_text() + "\n/* changed */\n")
    fresh_library.setattr(native, "SOURCES", (native.SOURCES[0], changed))
    native.library.cache_clear()
    assert native.library() is not None and len(list((tmp_path / "native").iterdir())) == 2  # a new key


def test_a_cached_library_that_does_not_load_is_rebuilt(fresh_library, tmp_path):
    """In a fresh process: this one already has the library mapped under that name, and dlopen would reuse it."""
    fresh_library.setenv("RNNKIT_CACHE", str(tmp_path))
    assert native.library() is not None
    (built,) = (tmp_path / "native").iterdir()
    broken = tmp_path / "broken"
    broken.write_bytes(b"not a shared library")
    broken.replace(built)  # a new file, as a build writes it: the mapped one stays intact
    code = "from rnnkit import native; assert native.library() is not None, native.unavailable()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert built.read_bytes()[:4] == b"\x7fELF"


def test_loading_leaves_the_process_floating_point_alone():
    """Denormals still exist after the library is loaded (an -ffast-math link would flush them to zero)."""
    assert native.library() is not None
    tiny = torch.tensor(1e-40, dtype=torch.float32)
    assert tiny * 1 > 0 and np.float32(1e-40) * np.float32(1) > 0
