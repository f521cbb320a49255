"""Data-parallel training throughput: `rnnkit train` in 1 process against `rnnkit train --nproc N`, same global batch.

    python benchmarks/ddp_throughput.py [--rounds 2] [--steps 10] [--nproc 1 2] [--data PATH] [-- TRAIN FLAGS]

Each variant is a real run of the command (default model: 2x512 LSTM, batch 64 x window 128, bf16 autocast), the
variants interleaved round by round. Throughput is steady state, read from the run's metrics.csv (one row per
step): tokens over wall time from step 3 to the last step, so start-up, the first steps and the closing
validation are left out. Threads: one process uses torch's default (every core); N processes get cores / N each
(what `--nproc` sets when OMP_NUM_THREADS is unset), so both use the whole machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_SHAKESPEARE, save, table  # noqa: E402

SKIP = 2  # steps left out at the start (allocation, oneDNN's first-call set-up)


def load() -> str:
    """1, 5 and 15-minute load averages: how busy the shared machine was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def one_run(data: str, nproc: int, steps: int, out: Path, extra: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "-m", "rnnkit", "train", "--data", data, "--out", str(out), "--max-steps", str(steps),
           "--eval-interval", str(10**6), "--log-interval", "1", "--quiet", "--sample-length", "0",
           "--nproc", str(nproc), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    with open(out / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["loss"]]  # training rows; the closing validation row has no loss
    first, last = rows[SKIP - 1], rows[-1]
    tokens = int(last["tokens"]) - int(first["tokens"])
    seconds = float(last["elapsed_s"]) - float(first["elapsed_s"])
    return {"tokens_per_s": tokens / seconds, "steps_timed": len(rows) - SKIP, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=TINY_SHAKESPEARE)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="training steps per run")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("extra", nargs="*", help="more `rnnkit train` flags, after --")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    load_before = load()
    rates: dict[int, list[float]] = {n: [] for n in args.nproc}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = args.nproc[r % len(args.nproc):] + args.nproc[: r % len(args.nproc)]
            for n in order:
                res = one_run(args.data, n, args.steps, Path(tmp) / f"r{r}-n{n}", args.extra)
                rates[n].append(res["tokens_per_s"])
                print(f"round {r + 1}, {n} process(es): {res['tokens_per_s']:,.0f} tokens/s "
                      f"({res['steps_timed']} steps in {res['seconds']:.1f} s)", flush=True)
    base = statistics.median(rates[args.nproc[0]])
    rows = [{"processes": n, "threads each": max(1, cores // n) if n > 1 else cores,
             "tokens/s": statistics.median(v), f"vs {args.nproc[0]}": statistics.median(v) / base,
             "rounds": [round(x, 1) for x in v]} for n, v in rates.items()]
    load_after = load()
    print(f"\nDDP throughput, rnnkit train defaults{' ' + ' '.join(args.extra) if args.extra else ''}, "
          f"{args.steps} steps per run (median of {args.rounds} interleaved rounds); load average before "
          f"{load_before}, after {load_after}")
    print(table(rows, ["processes", "threads each", "tokens/s", f"vs {args.nproc[0]}"]))
    print("\nwrote", save("ddp_throughput", {"rows": rows, "steps": args.steps, "extra_flags": args.extra,
                                            "load_before": load_before, "load_after": load_after}))


if __name__ == "__main__":
    main()
