"""Seconds and page faults per training step of the 2x512 character model, by cell path and heap setting.

    python benchmarks/train_step.py [--rounds 3] [--steps 4]

The model and batch of `rnnkit train`'s defaults (embedding 128, 2x512, batch 64 x window 128, bf16 autocast,
weight drop 0.2, activation regularisation, AdamW): the fused LSTM; the layer-normalised LSTM on its compiled
kernels (rnnkit.native.lnlstm); and the same LN-LSTM on autograd's loop over its cell (RNNKIT_NATIVE=0). Each
with glibc's default heap and with ``rnnkit.heap.keep_freed_memory`` (what the command line sets). The heap is a
per-process setting, so every variant runs in a fresh process each round; rounds rotate the order. Reports the
median over rounds and the ratio to the fused LSTM with the default heap, from this run, and each process's peak
resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

CHILD = """
import json, resource, sys, time
import torch
from rnnkit.heap import keep_freed_memory
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
cell, keep, steps = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
tuned = keep and keep_freed_memory()
torch.manual_seed(0)
model = LanguageModel(LanguageModelConfig(vocab_size=65, cell=cell)).train()
opt = torch.optim.AdamW(model.parameters(), 5e-3)
x, y = torch.randint(0, 65, (64, 128)), torch.randint(0, 65, (64, 128))
def step():
    with torch.autocast("cpu", torch.bfloat16):
        out = model(x, None, y)
    out.objective().backward()
    opt.step()
    opt.zero_grad()
for _ in range(2):
    step()
faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for _ in range(steps):
    step()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"s": (time.perf_counter() - t0) / steps, "tuned": tuned, "faults": (usage.ru_minflt - faults) / steps,
                  "peak_rss_mib": usage.ru_maxrss / 1024}))
"""

VARIANTS = {  # name: (cell, RNNKIT_NATIVE, keep the heap)
    "lstm fused, default heap": ("lstm", "1", "0"),
    "lstm fused, heap kept": ("lstm", "1", "1"),
    "lnlstm native, default heap": ("lnlstm", "1", "0"),
    "lnlstm native, heap kept": ("lnlstm", "1", "1"),
    "lnlstm autograd loop, default heap": ("lnlstm", "0", "0"),
    "lnlstm autograd loop, heap kept": ("lnlstm", "0", "1"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per process, after two warm-up steps")
    args = parser.parse_args()
    names = list(VARIANTS)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            cell, native, keep = VARIANTS[name]
            env = {**os.environ, "RNNKIT_NATIVE": native}
            done = subprocess.run([sys.executable, "-c", CHILD, cell, keep, str(args.steps)], env=env,
                                  capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout))
            print(f"round {r + 1} {name}: {runs[name][-1]}", flush=True)
    base = statistics.median(run["s"] for run in runs[names[0]])
    rows = []
    for name in names:
        s = statistics.median(run["s"] for run in runs[name])
        rows.append({"variant": name, "s/step": s, "tokens/s": 64 * 128 / s, "vs lstm default heap": base / s,
                     "page faults/step": statistics.median(run["faults"] for run in runs[name]),
                     "peak RSS MiB": statistics.median(run["peak_rss_mib"] for run in runs[name])})
    print(table(rows, ["variant", "s/step", "tokens/s", "vs lstm default heap", "page faults/step", "peak RSS MiB"]))
    print("wrote", save("train_step", {"rounds": args.rounds, "steps": args.steps, "rows": rows, "runs": runs}))


if __name__ == "__main__":
    main()
