"""Validation of a trained language model: seconds and loss, fp32 against bf16 autocast, by number of streams.

    python benchmarks/validation.py RUN_DIR [RUN_DIR ...] [--rounds 3] [--streams 16] [--full]

`rnnkit train` validates every ``--eval-interval`` steps on the whole validation split (the last 10%) with the
state carried, in ``--eval-streams`` parallel streams (16 by default), under the precision it trains at. This
times that pass for each run's last weights in fp32 and under bf16 autocast, interleaved round by round, and
reports the loss each gives: the difference is what bf16 validation costs in accuracy. ``--full`` also scores
one stream in bf16 (every character after the whole validation text before it), the figure that the streams'
cold starts lift the default measure above.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

from rnnkit.checkpoint import load_run  # noqa: E402
from rnnkit.data.corpus import encode_file, split_tokens  # noqa: E402
from rnnkit.train.tbptt import loss_sums  # noqa: E402

CPU = torch.device("cpu")


def score(model, tokens, streams: int, precision: str) -> tuple[float, float]:
    """(loss, seconds) of one validation pass."""
    bf16 = torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    t0 = time.perf_counter()
    with bf16:
        total, count = loss_sums(model, tokens, streams, CPU)
    return total / count, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of `rnnkit train`")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--full", action="store_true", help="also one stream in bf16 (slow: ~20 s on 2 cores)")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        model, vocab, config = load_run(run, "last", CPU)
        tokens = split_tokens(encode_file(Path(config["data"]["path"]), vocab))[1]
        variants = ("fp32", "bf16")
        score(model, tokens, args.streams, "bf16")  # warm-up: kernels built, buffers pooled
        seconds = {v: [] for v in variants}
        loss = {}
        for r in range(args.rounds):
            for v in variants[r % 2:] + variants[:r % 2]:
                loss[v], s = score(model, tokens, args.streams, v)
                seconds[v].append(s)
        m = model.config
        row = {"run": run.name, "model": f"{m.num_layers}x{m.hidden_size} {m.cell}", "streams": args.streams,
               "fp32 s": statistics.median(seconds["fp32"]), "bf16 s": statistics.median(seconds["bf16"]),
               "fp32 / bf16 time": statistics.median(seconds["fp32"]) / statistics.median(seconds["bf16"]),
               "fp32 loss": round(loss["fp32"], 5), "bf16 loss": round(loss["bf16"], 5),
               "bf16 - fp32": round(loss["bf16"] - loss["fp32"], 5),
               "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()}}
        if args.full:
            row["1 stream, bf16"] = round(score(model, tokens, 1, "bf16")[0], 5)
        rows.append(row)
    columns = ["run", "model", "streams", "fp32 s", "bf16 s", "fp32 / bf16 time", "fp32 loss", "bf16 loss",
               "bf16 - fp32"] + (["1 stream, bf16"] if args.full else [])
    print(f"validation of each run's last weights: {len(tokens) - 1:,} characters, median of {args.rounds} rounds")
    shown = [{k: f"{v:.5f}" if "loss" in k or k.startswith(("bf16 -", "1 stream")) else v for k, v in r.items()}
             for r in rows]  # losses to the fifth decimal: the differences are that small
    print(table(shown, columns))
    print("wrote", save("validation", {"rows": rows}))


if __name__ == "__main__":
    main()
