"""What the synthetic-task experiments share: their config, a training loop on fresh random batches, and the
CSV, PNG and JSON they write.

Each task draws a new random batch at every step from a seeded generator (the data never repeats, so there is
no over-fitting to speak of) and is scored on a fixed test set drawn from a separate, fixed seed — the same
test set whatever ``--seed`` is, so runs with different cells and seeds are scored on the same sequences.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit.checkpoint import atomic_write
from rnnkit.errors import ConfigError, TrainingDiverged
from rnnkit.nn.recurrent import Recurrent
from rnnkit.plots import save_figure, subplots  # noqa: F401  (the tasks import them from here)
from rnnkit.train import resolve_device

CELLS = ("rnn", "lstm", "gru")
TEST_SEED = 20_160_219  # the test sets' generator seed, independent of --seed

Batch = tuple[Tensor, Tensor]


@dataclass
class TaskConfig:
    """One run of a synthetic task. CLI flags are derived from these fields; the tasks override the defaults."""

    cell: str = field(default="lstm", metadata={"help": "rnn (tanh), lstm or gru"})
    T: int = field(default=100, metadata={"help": "sequence length: the span the model must remember"})
    minutes: float = field(default=5.0, metadata={"help": "wall-clock budget"})
    max_steps: int | None = field(default=None, metadata={"help": "also stop after this many updates"})
    hidden_size: int = field(default=128, metadata={"help": "hidden units (H)"})
    batch_size: int = field(default=50, metadata={"help": "sequences per update (B)"})
    lr: float = field(default=3e-3, metadata={"help": "learning rate (Adam)"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm at this value; 0 turns it off"})
    forget_bias: str = field(default="chrono", metadata={
        "help": "LSTM forget-gate bias at initialisation: a number (1.0 is common), or chrono: log U(1, T-1) per "
                "unit with the input-gate bias its negative (Tallec & Ollivier 2018)"})
    eval_every: int = field(default=100, metadata={"help": "score the test set every N steps"})
    test_size: int = field(default=1000, metadata={"help": "sequences in the fixed test set"})
    seed: int = field(default=0, metadata={"help": "random seed (initialisation and training batches)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"unknown cell {self.cell!r} — use one of {', '.join(CELLS)}")
        if self.T <= 2:
            raise ConfigError(f"--T must be at least 3 (got {self.T}) — pass a longer sequence length")
        if not self.minutes > 0 or not math.isfinite(self.minutes):
            raise ConfigError(f"--minutes must be a positive number (got {self.minutes}) — pass e.g. --minutes 5")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"--max-steps must be positive (got {self.max_steps}) — leave it out for no limit")
        for name in ("hidden_size", "batch_size", "eval_every", "test_size"):
            if getattr(self, name) <= 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be positive (got {getattr(self, name)}) — pass a whole number >= 1")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive (got {self.lr}) — pass e.g. --lr 1e-3")
        if self.forget_bias != "chrono":
            try:
                finite = math.isfinite(float(self.forget_bias))
            except ValueError:
                finite = False
            if not finite:
                raise ConfigError(f"--forget-bias must be a finite number or chrono (got {self.forget_bias!r}) — "
                                  "e.g. --forget-bias 1")
        if not self.grad_clip >= 0:
            raise ConfigError(f"--grad-clip must be >= 0 (got {self.grad_clip}) — 0 turns clipping off")


def init_forget_bias(rnn: Recurrent, value: str | float, T: int) -> None:
    """Set the LSTM forget-gate biases (no-op for other cells): a number, or ``"chrono"`` for memory spans up to T.

    Torch's default draws every bias near 0, so each forget gate starts at σ(0) = 0.5: the cell keeps half of ``c``
    per step and the gradient along the cell path shrinks by 2^-t — the LSTM starts out nearly as forgetful as a
    plain RNN and must first learn to remember. A bias of 1.0 (Gers et al. 2000; Jozefowicz et al. 2015) gives
    f = 0.73. ``chrono`` (Tallec & Ollivier 2018) draws ``b_f = log U(1, T - 1)`` per unit, with the input-gate
    bias ``-b_f``: unit j then starts with a memory time constant of about ``exp(b_f)`` steps, so some units
    carry information (and gradient) across the whole sequence from the first update. Torch stacks the gates
    i, f, g, o and adds ``bias_ih + bias_hh``, so the value goes into ``bias_ih`` and ``bias_hh``'s slice is
    zeroed.
    """
    H = rnn.hidden_size
    with torch.no_grad():
        for cell in rnn.cells:
            if cell.gates != 4 or cell.bias_ih is None:
                continue
            cell.bias_hh[:2 * H].zero_()
            if value == "chrono":
                b_f = torch.log(torch.empty(H).uniform_(1.0, max(T - 1.0, 1.0 + 1e-6)))
                cell.bias_ih[H:2 * H].copy_(b_f)
                cell.bias_ih[:H].copy_(-b_f)
            else:
                cell.bias_ih[H:2 * H].fill_(float(value))


def info(message: str) -> None:
    """Progress goes to stderr; stdout is kept for the final JSON line."""
    print(message, file=sys.stderr, flush=True)


def prepare_out(out: Path | str | None, name: str, files: tuple[str, ...]) -> Path:
    """``--out``, or ``runs/experiment-<name>-<date-time>``, made; refused when it already holds one of ``files``
    (an earlier run's results, which this one would write over) or is a file."""
    out = Path(out) if out is not None else Path("runs") / time.strftime(f"experiment-{name}-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file — choose a directory for --out")
    taken = [f for f in files if (out / f).exists()]
    if taken:
        raise ConfigError(f"{out} already holds {', '.join(taken)} from an earlier run — choose another --out, or "
                          "move them away")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_csv(rows: list[dict], path: Path) -> Path:
    """Rows of numbers as a CSV with a header, written atomically; columns are the first row's keys."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(Path(path), buf.getvalue().encode())
    return Path(path)


def print_result(result: dict) -> None:
    """The last line of stdout: one JSON object with the run's final figures."""
    print(json.dumps(result), flush=True)


def batched(fn: Callable[[Tensor, Tensor], dict], x: Tensor, y: Tensor, size: int = 500) -> dict:
    """Average ``fn``'s per-chunk means over the test set in chunks, weighting each by its size."""
    total: dict[str, float] = {}
    for i in range(0, len(x), size):
        part = fn(x[i:i + size], y[i:i + size])
        for k, v in part.items():
            total[k] = total.get(k, 0.0) + float(v) * len(x[i:i + size])
    return {k: v / len(x) for k, v in total.items()}


def test_scorer(score: Callable[[nn.Module, Tensor, Tensor], dict], x: Tensor, y: Tensor):
    """``evaluate(model) -> dict``: ``score`` averaged over the fixed test set, in eval mode, without gradients."""

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict:
        model.eval()
        scores = batched(lambda xb, yb: score(model, xb, yb), x, y)
        model.train()
        return scores

    return evaluate


def fit(
    model: nn.Module,
    config: TaskConfig,
    sample: Callable[[int, torch.Generator], Batch],
    evaluate: Callable[[nn.Module], dict],
    train_key: str,
    log: Callable[[str], None] = info,
) -> list[dict]:
    """Adam on a fresh batch per step, gradient clipping, a test-set score every ``eval_every`` steps.

    Stops at ``max_steps`` or when ``minutes`` have passed, whichever comes first, and scores the test set once
    more at the end. Returns one row per evaluation: ``step, elapsed_s, <train_key>, **evaluate(model)``, where
    ``<train_key>`` is the mean training loss since the previous row.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    rows: list[dict] = []
    step, since, running = 0, 0, torch.zeros((), device=device)
    start = time.perf_counter()
    deadline = start + 60.0 * config.minutes
    model.train()
    while True:
        x, y = (t.to(device) for t in sample(config.batch_size, generator))
        loss = model(x, targets=y).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step, since, running = step + 1, since + 1, running + loss.detach()
        done = (config.max_steps is not None and step >= config.max_steps) or time.perf_counter() >= deadline
        if step % config.eval_every and not done:
            continue
        train_loss = running.item() / since
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"the training loss became {train_loss} by step {step} — lower --lr or set "
                                   "--grad-clip")
        row = {"step": step, "elapsed_s": time.perf_counter() - start, train_key: train_loss, **evaluate(model)}
        rows.append(row)
        log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        since, running = 0, torch.zeros((), device=device)
        if done:
            return rows


def setup(config) -> torch.device:
    """Seed the initialisation and pick the device (any config with ``seed`` and ``device``)."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    return device


def plot_curves(ax, rows: list[dict], train_key: str, test_key: str, baseline: float, baseline_label: str):
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r[train_key] for r in rows], lw=1, alpha=0.6, label=f"train ({train_key})")
    ax.plot(steps, [r[test_key] for r in rows], "o-", lw=1.6, ms=3, label=f"test ({test_key})")
    ax.axhline(baseline, color="gray", ls="--", lw=1.2, label=baseline_label)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
