"""Peak resident memory of training against model size, optimizer state and batch.

    python benchmarks/memory.py [--steps 3] [--activation-reg AR,TAR]

Each configuration trains a few steps in a fresh process (so peaks do not mix) and reports its peak RSS
(``ru_maxrss``) next to what it must hold: parameters + gradients + AdamW's two moments (16 bytes a parameter in
fp32), and the rest — activations kept for BPTT, which grow with batch x window x hidden x layers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

CHILD = r"""
import json, resource, sys, tempfile
import numpy as np, torch
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.train import TrainConfig, Trainer
H, L, B, T, steps, precision, reg = json.loads(sys.argv[1])
reg = {} if reg is None else {"activation_reg": reg[0], "temporal_activation_reg": reg[1]}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ids = np.random.default_rng(0).integers(0, 65, size=B * T * (steps + 2) * 10 + 1).astype(np.uint16)
model = LanguageModel(LanguageModelConfig(vocab_size=65, hidden_size=H, num_layers=L, **reg))
with tempfile.TemporaryDirectory() as d:
    t = Trainer(model, ids, ids[:1000], TrainConfig(batch_size=B, seq_len=T, precision=precision, device="cpu",
                max_steps=10**9), d, show_progress=False)
    for _ in range(steps):
        t.train_step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"params": model.num_parameters(), "base_kib": base, "peak_kib": peak}))
"""

CONFIGS = [  # hidden, layers, batch, window
    (256, 2, 64, 128), (512, 2, 32, 128), (512, 2, 64, 128), (512, 2, 128, 128), (512, 2, 64, 256),
    (1024, 2, 64, 128), (512, 3, 64, 128),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--activation-reg", metavar="AR,TAR", default=None,
                        help="the activation penalties' weights (default: the model's, AR 2 and TAR 1)")
    args = parser.parse_args()
    reg = None if args.activation_reg is None else [float(v) for v in args.activation_reg.split(",")]
    rows = []
    for H, L, B, T in CONFIGS:
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([H, L, B, T, args.steps, args.precision, reg])],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        state_mib = r["params"] * 16 / 2**20
        peak_mib, base_mib = r["peak_kib"] / 1024, r["base_kib"] / 1024
        rows.append({"H": H, "L": L, "B": B, "T": T, "params": r["params"], "params+grads+adam MiB": state_mib,
                     "peak RSS MiB": peak_mib, "after import MiB": base_mib,
                     "other (activations...) MiB": peak_mib - base_mib - state_mib})
        print(f"  {H}x{L} B{B} T{T}: peak {peak_mib:,.0f} MiB", flush=True)
    print(f"peak resident memory of training ({args.precision}, {args.steps} steps, LSTM, V=65, "
          f"AR,TAR {'the defaults' if reg is None else reg})")
    print(table(rows, ["H", "L", "B", "T", "params", "params+grads+adam MiB", "peak RSS MiB", "after import MiB",
                       "other (activations...) MiB"]))
    name = "memory" if reg is None else f"memory-activation-reg-{reg[0]:g}-{reg[1]:g}"
    print("wrote", save(name, {"precision": args.precision, "activation_reg": reg, "rows": rows}))


if __name__ == "__main__":
    main()
