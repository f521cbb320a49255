"""The copy-memory task (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016): remember 10 symbols for T steps.

Alphabet: 0 is the blank, 1..8 the symbols, 9 the delimiter. An input is 10 symbols drawn uniformly from 1..8,
then T - 1 blanks, the delimiter, then 10 more blanks — T + 20 steps in all. The target is blank for the first
T + 10 steps and then the 10 symbols, in order: after the delimiter the model must play back what it saw T
steps earlier. The loss is the cross-entropy averaged over all T + 20 steps, as in the papers.

A memoryless model that has learnt the layout (blank, blank, ..., then any of 8 symbols) scores
``10 ln 8 / (T + 20)`` — the baseline line. Getting below it requires carrying 30 bits across T steps, which
the tanh RNN cannot learn once T is large: the gradient that would teach it to store the symbols vanishes on
the way back. Gated cells can hold them, though at T = 100 even the LSTM often sits on the baseline for a long
time before it finds the solution (Arjovsky et al. report it never leaving it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit.experiments.common import (
    TEST_SEED,
    TaskConfig,
    fit,
    info,
    init_forget_bias,
    plot_curves,
    prepare_out,
    save_figure,
    setup,
    subplots,
    test_scorer,
    write_csv,
)
from rnnkit.models.output import Output
from rnnkit.nn.cells import State
from rnnkit.nn.recurrent import Recurrent

BLANK, DELIMITER, SYMBOLS, RECALL = 0, 9, 8, 10
VOCAB = 10


@dataclass
class CopyConfig(TaskConfig):
    T: int = field(default=100, metadata={"help": "delay: steps between the last symbol and its recall"})


def copy_batch(batch_size: int, T: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``x (B, T + 20)`` and ``y (B, T + 20)``, token ids in 0..9; see the module docstring for the layout."""
    B, L = batch_size, T + 2 * RECALL
    symbols = torch.randint(1, SYMBOLS + 1, (B, RECALL), generator=generator)
    x = torch.full((B, L), BLANK, dtype=torch.long)
    x[:, :RECALL] = symbols
    x[:, T + RECALL - 1] = DELIMITER
    y = torch.full((B, L), BLANK, dtype=torch.long)
    y[:, -RECALL:] = symbols
    return x, y


def baseline_loss(T: int) -> float:
    """Cross-entropy per step of the best memoryless model: blanks for sure, then a uniform guess of 8 symbols."""
    return RECALL * math.log(SYMBOLS) / (T + 2 * RECALL)


class CopyTagger(nn.Module):
    """Many-to-many, same length: one-hot tokens -> recurrent layer -> a linear head per step.

    ``forward(x (B, T) ids, state=None, targets=None (B, T) ids) -> Output(logits (B, T, V), loss, state)``;
    ``loss`` is the cross-entropy averaged over every step.
    """

    def __init__(self, cell: str, hidden_size: int, forget_bias: str | float = 1.0, T: int = 100,
                 path: str = "auto") -> None:
        super().__init__()
        self.rnn = Recurrent(cell, VOCAB, hidden_size, path=path)
        self.head = nn.Linear(hidden_size, VOCAB)
        init_forget_bias(self.rnn, forget_bias, T + 2 * RECALL)

    def init_state(self, batch_size: int) -> State:
        return self.rnn.init_state(batch_size)

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None) -> Output:
        one_hot = nn.functional.one_hot(x, VOCAB).to(self.head.weight.dtype)  # (B, T, V)
        y, state = self.rnn(one_hot, state)  # (B, T, H)
        logits = self.head(y)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        return Output(logits, loss, state)


def _score(model: nn.Module, x: Tensor, y: Tensor) -> dict:
    out = model(x, targets=y)
    recalled = out.logits[:, -RECALL:].argmax(-1) == y[:, -RECALL:]  # (B, 10)
    return {"test_loss": out.loss.item(), "test_accuracy": recalled.float().mean().item()}


def run_copy(config: CopyConfig, out: Path | str | None = None, log=info) -> dict:
    """Train ``config.cell`` on the copy task; write ``copy.csv`` and ``copy.png``; return the final figures."""
    device = setup(config)
    out = prepare_out(out, "copy", ("copy.csv", "copy.png"))
    model = CopyTagger(config.cell, config.hidden_size, config.forget_bias, config.T).to(device)
    test_x, test_y = (t.to(device) for t in copy_batch(config.test_size, config.T,
                                                      torch.Generator().manual_seed(TEST_SEED)))
    baseline = baseline_loss(config.T)

    evaluate = test_scorer(_score, test_x, test_y)

    log(f"copy task: {config.cell.upper()} {config.hidden_size} hidden, delay T={config.T} ({config.T + 20} steps), "
        f"batch {config.batch_size}, lr {config.lr:g}, budget {config.minutes:g} min"
        + (f" or {config.max_steps} steps" if config.max_steps else "")
        + f"; memoryless baseline {baseline:.4f} nats/step, chance accuracy {1 / SYMBOLS:.3f}")
    rows = fit(model, config, lambda B, g: copy_batch(B, config.T, g), evaluate, "train_loss", log)
    write_csv(rows, out / "copy.csv")

    fig, ax = subplots(figsize=(8, 4.5), dpi=100)
    plot_curves(ax, rows, "train_loss", "test_loss", baseline, f"memoryless baseline ({baseline:.3f})")
    ax.set_ylabel("cross-entropy per step (nats)")
    acc = ax.twinx()
    acc.plot([r["step"] for r in rows], [r["test_accuracy"] for r in rows], color="tab:green", lw=1, ls=":",
             label="test accuracy on the 10 recalled symbols")
    acc.set_ylim(0, 1.02)
    acc.set_ylabel("accuracy")
    handles = ax.get_legend_handles_labels()[0] + acc.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="best", fontsize=8)
    last = rows[-1]
    ax.set_title(f"copy task, T={config.T}: {config.cell.upper()} loss {last['test_loss']:.4f}, "
                 f"recall accuracy {last['test_accuracy']:.3f}")
    save_figure(fig, out / "copy.png")
    return {
        "experiment": "copy", "cell": config.cell, "T": config.T, "test_loss": last["test_loss"],
        "baseline_loss": baseline, "accuracy": last["test_accuracy"], "steps": last["step"],
        "minutes": round(last["elapsed_s"] / 60, 3), "csv": str(out / "copy.csv"), "png": str(out / "copy.png"),
        "config": asdict(config),
    }

