"""Training throughput: (a) rnnkit's Trainer vs a raw PyTorch loop, (b) explicit cells vs the fused kernel.

    python benchmarks/train_throughput.py [--rounds 5] [--data ../shared/data/tinyshakespeare.txt]

(a) The same 2x512 LSTM character model, batch 64 x window 128, AdamW, clipping, state carried and detached:
    `Trainer.train_step` (real data windows) against a hand-written loop, in fp32 and bf16 autocast.
(b) One recurrent layer stack (2x512, batch 32 x 128 steps), forward + backward, per cell type: rnnkit's explicit
    cell loop against the fused kernel.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_SHAKESPEARE, interleave, save, table  # noqa: E402

from rnnkit.data import build_vocab, encode_file, split_tokens  # noqa: E402
from rnnkit.models import LanguageModel, LanguageModelConfig  # noqa: E402
from rnnkit.nn import Recurrent  # noqa: E402
from rnnkit.train import TrainConfig, Trainer  # noqa: E402


class RawLSTM(nn.Module):
    """What a user would write by hand."""

    def __init__(self, V: int, E: int, H: int, L: int) -> None:
        super().__init__()
        self.emb, self.rnn, self.head = nn.Embedding(V, E), nn.LSTM(E, H, L, batch_first=True), nn.Linear(H, V)

    def forward(self, x, h):
        y, h = self.rnn(self.emb(x), h)
        return self.head(y), h


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def raw_loop(ids, V, B, T, precision, steps, device="cpu"):
    torch.manual_seed(0)
    model = RawLSTM(V, 128, 512, 2).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    n = (len(ids) - 1) // B
    data = torch.from_numpy(ids[: n * B + 1].astype("int64")).to(device)
    xs, ys = data[:-1].view(B, n), data[1:].view(B, n)
    state = {"h": None, "k": 0}

    def run():
        for _ in range(steps):
            k = state["k"] % (n // T)
            x, y = xs[:, k * T:(k + 1) * T], ys[:, k * T:(k + 1) * T]
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=precision == "bf16"):
                logits, h = model(x, state["h"])
            loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state["h"], state["k"] = tuple(t.detach() for t in h), state["k"] + 1
        sync(device)
        return steps * B * T

    return run


def rnnkit_loop(ids, V, B, T, precision, steps, run_dir, device="cpu"):
    torch.manual_seed(0)
    # the raw loop's model: no DropConnect, no activation regularisation
    model = LanguageModel(LanguageModelConfig(vocab_size=V, weight_drop=0.0, activation_reg=0.0,
                                              temporal_activation_reg=0.0))
    train, val = split_tokens(ids)
    trainer = Trainer(model, train, val, TrainConfig(batch_size=B, seq_len=T, precision=precision, device=device,
                                                     max_steps=10**9), run_dir, show_progress=False)

    def run():
        tokens = sum(trainer.train_step()[2] for _ in range(steps))
        sync(device)
        return tokens

    return run


def layer_loop(cell, path, B=32, T=128, H=512, L=2, device="cpu", precision="fp32", compile_steps=False,
               **cell_options):
    """``compile_steps``: each cell's ``step`` through ``torch.compile`` (its pointwise ops fused)."""
    torch.manual_seed(0)
    layer = Recurrent(cell, H, H, L, path=path, **cell_options).to(device)
    if compile_steps:
        for c in layer.cells:
            c.step = torch.compile(c.step, dynamic=False)
    x = torch.randn(B, T, H, device=device)

    def run():
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=precision == "bf16"):
            y, _ = layer(x)
        y.float().sum().backward()
        sync(device)
        return B * T

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=TINY_SHAKESPEARE)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per round and variant")
    args = parser.parse_args()
    vocab, _ = build_vocab(args.data)
    ids = encode_file(args.data, vocab)
    B, T, V = 64, 128, len(vocab)
    rows_a = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            res = interleave({
                "raw": raw_loop(ids, V, B, T, precision, args.steps),
                "rnnkit": rnnkit_loop(ids, V, B, T, precision, args.steps, Path(tmp) / precision),
            }, args.rounds)
            rows_a.append({"precision": precision, "raw tok/s": res["raw"]["median"],
                           "rnnkit tok/s": res["rnnkit"]["median"],
                           "ratio": res["rnnkit"]["median"] / res["raw"]["median"], "rounds": res})
    print("(a) training throughput, 2x512 LSTM, batch 64 x window 128 (tokens/s, median of interleaved rounds)")
    print(table(rows_a, ["precision", "raw tok/s", "rnnkit tok/s", "ratio"]))
    rows_b = []
    for cell in ("lstm", "gru", "rnn"):
        res = interleave({"fused": layer_loop(cell, "fused"), "explicit": layer_loop(cell, "explicit")},
                         max(2, args.rounds // 2))
        rows_b.append({"cell": cell, "fused tok/s": res["fused"]["median"], "explicit tok/s": res["explicit"]["median"],
                       "explicit/fused": res["explicit"]["median"] / res["fused"]["median"], "rounds": res})
    print("\n(b) explicit cell loop vs fused kernel, 2x512 layer, batch 32 x 128 steps, forward + backward")
    print(table(rows_b, ["cell", "fused tok/s", "explicit tok/s", "explicit/fused"]))
    print("\nwrote", save("train_throughput", {"a": rows_a, "b": rows_b}))


if __name__ == "__main__":
    main()
