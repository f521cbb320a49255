"""Shared helpers for the benchmark scripts: interleaved timing, machine description, JSON results.

Benchmarks print a table and write ``benchmarks/results/<name>.json``. Compared variants are interleaved round by
round so that a noisy neighbour slows all of them alike; report ratios from one run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
TINY_SHAKESPEARE = str(Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt")


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def interleave(variants: dict[str, Callable[[], int]], rounds: int, warmup: int = 1) -> dict[str, dict]:
    """Run each variant once per round, in rotating order; each call returns the units it processed.

    Returns per variant the median units/second over rounds and every round's figure.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    rates: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            units = variants[name]()
            rates[name].append(units / (time.perf_counter() - t0))
    return {k: {"median": statistics.median(v), "rounds": [round(x, 1) for x in v]} for k, v in rates.items()}


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
    return "" if v is None else str(v)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
