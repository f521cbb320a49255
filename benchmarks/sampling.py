"""Sampling speed for every sampling path, batch 1 and batched, and the quality cost of int8.

    python benchmarks/sampling.py [--run RUN_DIR] [--tokens 2000] [--rounds 3]

Paths, each stepped once per token from Python with ``next_token`` drawing in torch: calling torch.nn.LSTM once
per token (what a quick hand-written sampler does), rnnkit's own cells (``model.step``), ``FastStepper`` — torch's
one-op cells — in fp32 and int8, and ``NativeLSTM.step`` (rnnkit.native's compiled step) in fp32 and int8. Then
what ``rnnkit sample`` runs, ``rnnkit.generate.generate`` end to end, on the compiled kernels (a run of tokens per
call, drawn in C; on torch's threads, and once more on one thread) and on torch's path (``native=False``). With
``--run`` the model is that run's (2x512 LSTM by default) and the validation loss is measured through each int8
path against fp32. A layer-normalised LSTM (``--cell lnlstm``) has no torch.nn cell: its torch paths are rnnkit's
own cells, and its only int8 path the kernels'; ratios are then to ``model.step``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleave, save, table  # noqa: E402

from rnnkit.checkpoint import load_run  # noqa: E402
from rnnkit.data import Streams, encode_file, split_tokens  # noqa: E402
from rnnkit.generate import FastStepper, generate, next_token  # noqa: E402
from rnnkit.models import LanguageModel, LanguageModelConfig  # noqa: E402
from rnnkit.native import unavailable  # noqa: E402
from rnnkit.native.sampler import NativeLSTM  # noqa: E402


def sampler(step, state, B, n, V, seed=0, device="cpu"):
    g = torch.Generator(device=device).manual_seed(seed)

    @torch.inference_mode()
    def run():
        s, logits = state(), torch.zeros(B, V, device=device)
        for _ in range(n):
            tok = next_token(logits, 0.8, None, None, g)
            logits, s = step(tok, s)
        return B * n

    return run


def end_to_end(model, B, n, **kwargs):
    """``generate`` itself: what ``rnnkit sample`` runs."""
    def run():
        generate(model, [0], n, temperature=0.8, num_samples=B, seed=0, **kwargs)
        return B * n

    return run


def one_thread(run):
    """``run`` with torch, and so the kernels' OpenMP pool, on one thread."""
    def wrapped():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run()
        finally:
            torch.set_num_threads(threads)

    return wrapped


def native_step(kernels):
    return lambda tok, s: (kernels.step(tok, s), s)


def naive_lstm(model):
    """Embedding -> torch.nn.LSTM called on one step -> head: the fused kernel set up on every call."""
    lstm = model.rnn.to_torch().eval()

    def step(tok, s):
        y, s = lstm(model.embedding(tok)[:, None], s)
        return model.head(y[:, 0]), s

    return step


@torch.inference_mode()
def stepper_val_loss(step, init, tokens, streams=16):
    """Validation loss computed one token at a time through ``step`` (so int8 weights are what is measured)."""
    batches = Streams(tokens, streams, len(tokens))
    x, y = batches.window(0)
    s, total, count = init(x.shape[0]), 0.0, 0
    for t in range(x.shape[1]):
        logits, s = step(x[:, t], s)
        valid = y[:, t] != -100
        total += nn.functional.cross_entropy(logits[valid].float(), y[valid, t], reduction="sum").item()
        count += int(valid.sum())
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: an untrained 2x512 LSTM, V=65)")
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per round at batch 1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.run:
        model, vocab, config = load_run(args.run)
    else:
        torch.manual_seed(0)
        model, config = LanguageModel(LanguageModelConfig(vocab_size=65)).eval(), None
    V = model.config.vocab_size
    if unavailable():
        sys.exit(f"the native kernels are unavailable: {unavailable()}")
    fp32, int8 = FastStepper.for_model(model), FastStepper.for_model(model, int8=True)
    nfp32, nint8 = NativeLSTM.for_model(model), NativeLSTM.for_model(model, int8=True)
    rows = []
    base_name = "FastStepper fp32" if fp32 is not None else "rnnkit cells (model.step)"
    ratio = "vs fp32 stepper" if fp32 is not None else "vs model.step"
    for B, n in ((1, args.tokens), (8, max(50, args.tokens // 4)), (64, max(50, args.tokens // 20))):
        variants = {
            "rnnkit cells (model.step)": sampler(model.step, lambda B=B: model.init_state(B), B, n, V),
            "NativeLSTM.step fp32": sampler(native_step(nfp32), lambda B=B: nfp32.state(model.init_state(B)), B, n, V),
            "NativeLSTM.step int8": sampler(native_step(nint8), lambda B=B: nint8.state(model.init_state(B)), B, n, V),
            "generate, kernels, fp32": end_to_end(model, B, n),
            "generate, kernels, int8": end_to_end(model, B, n, int8=True),
            "generate, torch, fp32": end_to_end(model, B, n, native=False),
            "generate, kernels, fp32, one thread": one_thread(end_to_end(model, B, n)),
            "generate, kernels, int8, one thread": one_thread(end_to_end(model, B, n, int8=True)),
        }
        if fp32 is not None:  # torch.nn cells exist (not for a layer-normalised LSTM): torch's own paths too
            variants.update({
                "FastStepper fp32": sampler(fp32, lambda B=B: fp32.split(model.init_state(B)), B, n, V),
                "FastStepper int8": sampler(int8, lambda B=B: int8.split(model.init_state(B)), B, n, V),
                "generate, torch, int8": end_to_end(model, B, n, native=False, int8=True),
            })
            if B == 1:
                variants["torch.nn.LSTM per call"] = sampler(naive_lstm(model), lambda: None, B, n, V)
        res = interleave(variants, args.rounds)
        base = res[base_name]["median"]
        rows += [{"batch": B, "path": k, "tokens/s": v["median"], ratio: v["median"] / base}
                 for k, v in res.items()]
    print(f"sampling speed, {model.config.num_layers}x{model.config.hidden_size} {model.config.cell.upper()} "
          f"(tokens/s over all rows, median of interleaved rounds; {torch.get_num_threads()} torch threads, which "
          "the compiled kernels share, unless one thread is named)")
    print(table(rows, ["batch", "path", "tokens/s", ratio]))
    payload = {"rows": rows, "cell": model.config.cell, "base": base_name}
    if config is not None:
        path = Path(config["data"]["path"])
        val = split_tokens(encode_file(path, vocab))[1]
        q = {
            "fp32": stepper_val_loss(fp32, lambda B: fp32.split(model.init_state(B)), val) if fp32 is not None
            else stepper_val_loss(model.step, model.init_state, val),
            "fp32 (kernels)": stepper_val_loss(native_step(nfp32), lambda B: nfp32.state(model.init_state(B)), val),
            "int8 (kernels)": stepper_val_loss(native_step(nint8), lambda B: nint8.state(model.init_state(B)), val),
        }
        if int8 is not None:
            q["int8 (torch)"] = stepper_val_loss(int8, lambda B: int8.split(model.init_state(B)), val)
        print("\nvalidation loss through each stepper (nats/char): "
              + ", ".join(f"{k} {v:.4f} ({v - q['fp32']:+.4f})" for k, v in q.items()))
        payload["quality"] = q
    print("wrote", save("sampling" if model.config.cell == "lstm" else f"sampling-{model.config.cell}", payload))


if __name__ == "__main__":
    main()
