"""Shared fixtures.

Real data comes from one setting, ``RNNKIT_TEST_DATA`` (default: ``../shared/data`` beside the repository).
Tests that need it skip with the reason when it is absent (a user's fresh clone); with ``RNNKIT_REQUIRE_TEST_DATA=1``
(set by .ci/run, where the data is present) they fail instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(os.environ.get("RNNKIT_TEST_DATA", REPO.parent / "shared" / "data"))



@contextmanager
def torch_threads(n: int):
    """torch's thread count (which rnnkit.native's OpenMP passes share) set to ``n``, and restored on leaving."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)

def require_data(relative: str) -> Path:
    path = TEST_DATA / relative
    if not path.exists():
        reason = f"{path} not found: set RNNKIT_TEST_DATA to the folder holding the shared test data"
        if os.environ.get("RNNKIT_REQUIRE_TEST_DATA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def shakespeare() -> Path:
    return require_data("tinyshakespeare.txt")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """Each test gets its own cache directory and a fixed seed; no test reads the user's cache."""
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("RNNKIT_DATA", raising=False)
    torch.manual_seed(0)


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """About 20 KB of real English prose and code (CPython's own documentation), on every machine."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    text = "\n\n".join(topics[k] for k in sorted(topics))[:20_000]
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def refuse_writes_in(monkeypatch, directory: Path) -> None:
    """Atomic writes into ``directory`` fail as they would in a read-only one (root ignores permission bits)."""
    import rnnkit.checkpoint

    beside = rnnkit.checkpoint._temporary_beside

    def refuse(path):
        if path.parent == directory:
            raise PermissionError(13, "Permission denied", str(path))
        return beside(path)

    monkeypatch.setattr(rnnkit.checkpoint, "_temporary_beside", refuse)


def require_tool(available: bool, what: str, variable: str) -> None:
    """Skip when a system package a test needs is missing; fail instead where ``variable`` is 1 (CI installs it)."""
    if not available:
        reason = f"{what} — install it (see .ci/run)"
        if os.environ.get(variable) == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def hw_dataset(tmp_path_factory) -> Path:
    """A small real handwriting dataset (Tatoeba's English sentences in two of Debian's handwriting fonts, Rufscript
    and Kristi; DancingScript for the test lines), built once per session: short lines, undistorted, so a small
    recogniser learns to read them in a minute."""
    from rnnkit.data.handwriting import HandwritingSpec, build_handwriting, find_hands
    from rnnkit.errors import ConfigError

    text = require_data("spa-eng/spa.txt")
    try:
        find_hands(["/usr/share/fonts"], "DancingScript")
        fonts = True
    except ConfigError:
        fonts = False
    require_tool(fonts, "the handwriting fonts are not installed", "RNNKIT_REQUIRE_FONTS")
    out = tmp_path_factory.mktemp("hw") / "data"
    fonts = [f"/usr/share/fonts/{d}" for d in ("truetype/rufscript", "truetype/kristi", "opentype/dancingscript")]
    spec = HandwritingSpec(text=text, train_lines=600, val_lines=60, test_lines=40, max_chars=12, height=24,
                           augment="none", eval_augment="none", seed=5, font_dirs=fonts)
    build_handwriting(out, spec, progress=False, workers=1)
    return out
