"""The benchmarks on a GPU: training throughput, cuDNN vs explicit cells, bf16 autocast, sampling, memory.

    python benchmarks/gpu.py [--rounds 5] [--data ../shared/data/tinyshakespeare.txt] [--device cuda]

(a) rnnkit's Trainer against a raw PyTorch loop, 2x512 LSTM character model, window 128, at batch 64 (the CPU
    benchmark's shape) and 256, in fp32 and bf16 autocast.
(b) one 2x512 recurrent layer stack, batch 64 x 128 steps, forward + backward: cuDNN against rnnkit's explicit cell
    loop, eager and with each cell's step compiled by ``torch.compile`` (fusing its pointwise ops), per cell type,
    in fp32 and bf16; and the cells with no cuDNN kernel (layer-normalised LSTM, zoneout, recurrent dropout).
(c) sampling tokens/s at batch 1 and 64: rnnkit's cells (``model.step``) and ``FastStepper`` (torch's one-op cells).
(d) peak GPU memory of a training step against batch size.
Every timed call ends with ``torch.cuda.synchronize()``; variants are interleaved round by round (``common``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_SHAKESPEARE, interleave, save, table  # noqa: E402
from sampling import sampler  # noqa: E402
from train_throughput import layer_loop, raw_loop, rnnkit_loop, sync  # noqa: E402

from rnnkit.data import build_vocab, encode_file, split_tokens  # noqa: E402
from rnnkit.generate import FastStepper  # noqa: E402
from rnnkit.models import LanguageModel, LanguageModelConfig  # noqa: E402
from rnnkit.train import TrainConfig, Trainer  # noqa: E402


def compiled_layer_loop(cell, device, precision, B, T, **options):
    """The explicit loop with every cell's ``step`` compiled: one or two fused kernels per step instead of ~10."""
    return layer_loop(cell, "explicit", B=B, T=T, device=device, precision=precision, compile_steps=True, **options)


def part_a(ids, V, device, rounds, steps):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for B in (64, 256):
            for precision in ("fp32", "bf16"):
                res = interleave({
                    "raw": raw_loop(ids, V, B, 128, precision, steps, device),
                    "rnnkit": rnnkit_loop(ids, V, B, 128, precision, steps, Path(tmp) / f"{B}{precision}", device),
                }, rounds)
                rows.append({"batch": B, "precision": precision, "raw tok/s": res["raw"]["median"],
                             "rnnkit tok/s": res["rnnkit"]["median"],
                             "ratio": res["rnnkit"]["median"] / res["raw"]["median"], "rounds": res})
    return rows


def part_b(device, rounds, B=64, T=128):
    rows = []
    for precision in ("fp32", "bf16"):
        for cell in ("lstm", "gru", "rnn"):
            res = interleave({
                "fused": layer_loop(cell, "fused", B=B, T=T, device=device, precision=precision),
                "explicit": layer_loop(cell, "explicit", B=B, T=T, device=device, precision=precision),
                "compiled": compiled_layer_loop(cell, device, precision, B, T),
            }, rounds, warmup=2)
            fused = res["fused"]["median"]
            rows.append({"precision": precision, "cell": cell, "cuDNN tok/s": fused,
                         "explicit tok/s": res["explicit"]["median"], "compiled tok/s": res["compiled"]["median"],
                         "explicit/cuDNN": res["explicit"]["median"] / fused,
                         "compiled/cuDNN": res["compiled"]["median"] / fused, "rounds": res})
    # cells with no cuDNN kernel, against the plain LSTM's cuDNN figure of the same run
    for precision in ("fp32", "bf16"):
        variants = {"lstm cuDNN": layer_loop("lstm", "fused", B=B, T=T, device=device, precision=precision)}
        for name, cell, options in (("lnlstm", "lnlstm", {}), ("lstm zoneout 0.1", "lstm", {"zoneout": 0.1}),
                                    ("lstm recurrent dropout 0.1", "lstm", {"recurrent_dropout": 0.1})):
            variants[name] = layer_loop(cell, "explicit", B=B, T=T, device=device, precision=precision, **options)
            variants[name + " compiled"] = compiled_layer_loop(cell, device, precision, B, T, **options)
        res = interleave(variants, rounds, warmup=2)
        base = res["lstm cuDNN"]["median"]
        rows += [{"precision": precision, "cell": k, "explicit tok/s": v["median"], "vs lstm cuDNN": v["median"] / base}
                 for k, v in res.items()]
    return rows


def cuda_sampler(step, state, B, n, V, device):
    run = sampler(step, state, B, n, V, device=device)

    def timed():
        units = run()
        sync(device)
        return units

    return timed


def part_c(device, rounds, tokens):
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=65)).to(device).eval()
    fast = FastStepper.for_model(model)
    rows = []
    for B, n in ((1, tokens), (64, tokens), (1024, max(50, tokens // 4))):
        res = interleave({
            "rnnkit cells (model.step)": cuda_sampler(model.step, lambda B=B: model.init_state(B), B, n, 65,
                                                      device),
            "FastStepper fp32": cuda_sampler(fast, lambda B=B: fast.split(model.init_state(B)), B, n, 65,
                                             device),
        }, rounds)
        base = res["FastStepper fp32"]["median"]
        rows += [{"batch": B, "path": k, "tokens/s": v["median"], "vs FastStepper": v["median"] / base}
                 for k, v in res.items()]
    return rows


def part_d(ids, V, device):
    rows = []
    train, val = split_tokens(ids)
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            for B in (64, 256, 1024):
                torch.manual_seed(0)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                model = LanguageModel(LanguageModelConfig(vocab_size=V))
                trainer = Trainer(model, train, val, TrainConfig(batch_size=B, seq_len=128, precision=precision,
                                                                 device=device, max_steps=10**9),
                                  Path(tmp) / f"{precision}{B}", show_progress=False)
                for _ in range(2):
                    trainer.train_step()
                sync(device)
                params = sum(p.numel() * p.element_size() for p in model.parameters())
                rows.append({"precision": precision, "batch": B, "params MiB": params / 2**20,
                             "peak MiB": torch.cuda.max_memory_allocated(device) / 2**20})
                del trainer, model
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=TINY_SHAKESPEARE)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="training steps per round and variant in (a)")
    parser.add_argument("--tokens", type=int, default=400, help="sampled tokens per round in (c)")
    parser.add_argument("--parts", default="abcd")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device — this benchmark needs a GPU (the CPU ones are the other scripts)")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here; bf16 is its own row
    torch.backends.cudnn.allow_tf32 = False
    torch._dynamo.config.recompile_limit = 64  # one compiled Cell.step per cell instance and state type
    vocab, _ = build_vocab(args.data)
    ids = encode_file(args.data, vocab)
    V = len(vocab)
    payload = {}
    if "a" in args.parts:
        payload["a"] = part_a(ids, V, args.device, args.rounds, args.steps)
        print("(a) training throughput, 2x512 LSTM, window 128 (tokens/s, median of interleaved rounds)")
        print(table(payload["a"], ["batch", "precision", "raw tok/s", "rnnkit tok/s", "ratio"]), flush=True)
    if "b" in args.parts:
        payload["b"] = part_b(args.device, args.rounds)
        print("\n(b) 2x512 layer, batch 64 x 128 steps, forward + backward (tokens/s)")
        print(table([r for r in payload["b"] if "cuDNN tok/s" in r],
                    ["precision", "cell", "cuDNN tok/s", "explicit tok/s", "compiled tok/s", "explicit/cuDNN",
                     "compiled/cuDNN"]))
        print(table([r for r in payload["b"] if "vs lstm cuDNN" in r],
                    ["precision", "cell", "explicit tok/s", "vs lstm cuDNN"]), flush=True)
    if "c" in args.parts:
        payload["c"] = part_c(args.device, args.rounds, args.tokens)
        print("\n(c) sampling, untrained 2x512 LSTM, V=65 (tokens/s over all rows)")
        print(table(payload["c"], ["batch", "path", "tokens/s", "vs FastStepper"]), flush=True)
    if "d" in args.parts:
        payload["d"] = part_d(ids, V, args.device)
        print("\n(d) peak GPU memory of a training step, 2x512 LSTM, window 128")
        print(table(payload["d"], ["precision", "batch", "params MiB", "peak MiB"]))
    print("wrote", save("gpu", payload))


if __name__ == "__main__":
    main()
