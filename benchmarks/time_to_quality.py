"""Time to quality: Tiny Shakespeare validation loss against wall time, for `rnnkit train` configurations.

    python benchmarks/time_to_quality.py --minutes 10 [--config "NAME=FLAGS" ...] [--tag TAG] [--dynamic] [--muon]

Each configuration is one `rnnkit train` run on the whole machine (run them one after another, never in
parallel); its metrics.csv gives validation loss against elapsed time. Default: the default settings only.
``--muon`` runs each through `train_muon.py` instead (Muon on the recurrent matrices; FLAGS may then hold
``--muon-lr-scale S``). ``--dynamic`` also scores each run's final model by dynamic evaluation (`rnnkit eval
--dynamic`, ~2 minutes each, after the timed run): a different measure, in its own column.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TINY_SHAKESPEARE, save, table  # noqa: E402

THRESHOLDS = (1.6, 1.5, 1.47, 1.45, 1.42, 1.4, 1.38)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=TINY_SHAKESPEARE)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--config", action="append", default=[], help='NAME=FLAGS, e.g. "fp32=--precision fp32"')
    parser.add_argument("--tag", help="write results/time_to_quality-TAG.json, keeping the untagged file")
    parser.add_argument("--dynamic", action="store_true", help="also the final model's dynamic-evaluation loss")
    parser.add_argument("--muon", action="store_true", help="train with benchmarks/train_muon.py (Muon + AdamW)")
    args = parser.parse_args()
    configs = dict(c.split("=", 1) for c in args.config) or {"defaults": ""}
    rows, curves = [], {}
    for name, flags in configs.items():
        out = RESULTS / "ttq" / name
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        trainer = [str(Path(__file__).resolve().parent / "train_muon.py")] if args.muon else ["-m", "rnnkit"]
        cmd = [sys.executable, *trainer, "train", "--data", args.data, "--minutes", str(args.minutes),
               "--out", str(out), "--quiet", "--sample-length", "0", *shlex.split(flags)]
        print("+", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
        with open(out / "metrics.csv") as f:
            evals = [(float(r["elapsed_s"]), float(r["val_loss"])) for r in csv.DictReader(f) if r["val_loss"]]
        curves[name] = evals
        row = {"config": name, "flags": flags or "(defaults)", "final val": evals[-1][1],
               "best val": min(v for _, v in evals)}
        for th in THRESHOLDS:
            row[f"t<={th}"] = next((round(t) for t, v in evals if v <= th), None)
        if args.dynamic:
            scored = subprocess.run([sys.executable, "-m", "rnnkit", "eval", str(out), "--dynamic", "--json"],
                                    check=True, capture_output=True, text=True)
            row["dynamic val"] = json.loads(scored.stdout)["dynamic"]["loss"]
        rows.append(row)
    print(f"Tiny Shakespeare validation loss (nats/char) after {args.minutes:g} minutes; seconds to reach each level")
    dynamic = ["dynamic val"] if args.dynamic else []
    print(table(rows, ["config", "final val", "best val", *dynamic, *[f"t<={th}" for th in THRESHOLDS]]))
    name = "time_to_quality" + (f"-{args.tag}" if args.tag else "")
    print("wrote", save(name, {"minutes": args.minutes, "rows": rows, "curves": curves}))


if __name__ == "__main__":
    main()
