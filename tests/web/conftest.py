"""Fixtures for the web tests: a tiny model trained in seconds, and ``rnnkit serve`` running on loopback.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package. Where they are
missing it skips with the reason; with ``RNNKIT_REQUIRE_BROWSER=1`` (set by .ci/run, which installs them) it fails
instead, so CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rnnkit.cli import main

TINY = ["--hidden-size", "32", "--num-layers", "2", "--embedding-size", "16", "--batch-size", "8", "--seq-len", "32",
        "--eval-interval", "20", "--quiet", "--precision", "fp32", "--sample-length", "0", "--lr", "1e-2"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A 2x32 LSTM trained for 40 steps on CPython's documentation (quotes, brackets and lines to rank units on)."""
    import pydoc_data.topics

    root = tmp_path_factory.mktemp("web")
    topics = pydoc_data.topics.topics
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics))[:30_000], encoding="utf-8")
    run_dir = root / "run"
    assert main(["train", "--data", str(corpus), "--max-steps", "40", "--out", str(run_dir), *TINY]) == 0
    return run_dir


@dataclass
class Server:
    url: str
    pid: int
    log: Path


@contextlib.contextmanager
def serving(run_dir: Path, log: Path):
    """``rnnkit serve RUN_DIR --port 0`` in its own process; yields a Server once it listens."""
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rnnkit", "serve", str(run_dir), "--port", "0"],
                                stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (m := re.search(r"on (http://127\.0\.0\.1:\d+/)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, f"no server:\n{log.read_text()}"
            time.sleep(0.1)
        yield Server(m.group(1), proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    """``serve_run(run_dir)``: a context manager that serves another run directory."""
    return lambda run_dir: serving(Path(run_dir), tmp_path_factory.mktemp("serve") / "serve.log")


@pytest.fixture(scope="session")
def server(tiny_run, serve_run):
    """The tiny run, served for the whole session."""
    with serve_run(tiny_run) as s:
        yield s


def _require_browser() -> tuple[str, str]:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
        has_selenium = True
    except ImportError:
        has_selenium = False
    if browser and driver and has_selenium:
        return browser, driver
    missing = ", ".join(name for name, ok in (("chromium", browser), ("chromedriver", driver),
                                              ("selenium", has_selenium)) if not ok)
    reason = (f"no headless browser ({missing} missing): apt-get install chromium chromium-driver and "
              "pip install selenium")
    if os.environ.get("RNNKIT_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser():
    """Headless Chromium through chromedriver, both the system's own (Selenium Manager never downloads)."""
    binary, driver_path = _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1500", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
