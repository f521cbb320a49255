"""The adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015): a test of long-range memory.

Each input step has two channels: a value drawn uniformly from [0, 1] and a marker that is 1 at exactly two
steps — one in the first half of the sequence, one in the second — and 0 elsewhere. The target, read from the
last hidden state, is the sum of the two marked values. Predicting 1 (the mean of the sum) whatever the input
gives MSE = Var(u1 + u2) = 2/12 ≈ 0.167, so a model only beats that line once it carries a value across up to
T steps.

Why the cells differ: the gradient of the loss with respect to the state at the first marker is a product of
~T step Jacobians. For the tanh RNN that product shrinks geometrically (the vanishing gradient), so the
update says nothing about the first marker and the RNN stays on the 0.167 line once T is a few dozen. The
LSTM's cell state ``c' = f * c + i * g`` and the GRU's ``h' = (1 - z) * n + z * h`` carry an additive path
whose factor per step is a gate that can sit near 1, so the signal survives and the error drops towards 0.
"""

from __future__ import annotations

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


@dataclass
class AddingConfig(TaskConfig):
    T: int = field(default=200, metadata={"help": "sequence length: the span the model must remember"})


def adding_batch(batch_size: int, T: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``x (B, T, 2)``: channel 0 the values in [0, 1], channel 1 the two markers; ``y (B,)`` the marked sum.

    The first marker is uniform over steps ``[0, T//2)``, the second over ``[T//2, T)``.
    """
    B, half = batch_size, T // 2
    values = torch.rand(B, T, generator=generator)
    first = torch.randint(0, half, (B,), generator=generator)
    second = torch.randint(half, T, (B,), generator=generator)
    marker = torch.zeros(B, T)
    rows = torch.arange(B)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    x = torch.stack([values, marker], dim=-1)  # (B, T, 2)
    y = values[rows, first] + values[rows, second]  # (B,)
    return x, y


class AddingRegressor(nn.Module):
    """Many-to-one regression: a recurrent layer reads the sequence, a linear head maps its last output to a number.

    ``forward(x (B, T, C), state=None, targets=None (B,)) -> Output(logits (B,), loss, state)``; ``logits`` is the
    prediction and ``loss`` the mean squared error.
    """

    def __init__(self, cell: str, hidden_size: int, input_size: int = 2, forget_bias: str | float = 1.0,
                 T: int = 100, path: str = "auto") -> None:
        super().__init__()
        self.rnn = Recurrent(cell, input_size, hidden_size, path=path)
        self.head = nn.Linear(hidden_size, 1)
        init_forget_bias(self.rnn, forget_bias, T)

    def init_state(self, batch_size: int) -> State:
        return self.rnn.init_state(batch_size)

    def forward(self, x: Tensor, state: State | None = None, targets: Tensor | None = None) -> Output:
        y, state = self.rnn(x, state)  # (B, T, H)
        prediction = self.head(y[:, -1]).squeeze(-1)  # (B,)
        loss = None if targets is None else nn.functional.mse_loss(prediction, targets)
        return Output(prediction, loss, state)


def _score(model: nn.Module, x: Tensor, y: Tensor) -> dict:
    return {"test_mse": nn.functional.mse_loss(model(x).logits, y).item()}


def run_adding(config: AddingConfig, out: Path | str | None = None, log=info) -> dict:
    """Train ``config.cell`` on the adding problem; write ``adding.csv`` and ``adding.png``; return the figures."""
    device = setup(config)
    out = prepare_out(out, "adding", ("adding.csv", "adding.png"))
    model = AddingRegressor(config.cell, config.hidden_size, forget_bias=config.forget_bias, T=config.T).to(device)
    test_x, test_y = adding_batch(config.test_size, config.T, torch.Generator().manual_seed(TEST_SEED))
    test_x, test_y = test_x.to(device), test_y.to(device)
    baseline = nn.functional.mse_loss(torch.ones_like(test_y), test_y).item()

    evaluate = test_scorer(_score, test_x, test_y)

    log(f"adding problem: {config.cell.upper()} {config.hidden_size} hidden, T={config.T}, batch "
        f"{config.batch_size}, lr {config.lr:g}, budget {config.minutes:g} min"
        + (f" or {config.max_steps} steps" if config.max_steps else "")
        + f"; predicting 1 scores MSE {baseline:.4f} on the test set")
    rows = fit(model, config, lambda B, g: adding_batch(B, config.T, g), evaluate, "train_mse", log)
    write_csv(rows, out / "adding.csv")
    fig, ax = subplots(figsize=(8, 4.5), dpi=100)
    plot_curves(ax, rows, "train_mse", "test_mse", baseline, f"predict 1 ({baseline:.3f})")
    ax.set_ylabel("mean squared error")
    ax.set_title(f"adding problem, T={config.T}: {config.cell.upper()} reaches test MSE {rows[-1]['test_mse']:.2g}")
    ax.legend()
    save_figure(fig, out / "adding.png")
    last = rows[-1]
    return {
        "experiment": "adding", "cell": config.cell, "T": config.T, "test_mse": last["test_mse"],
        "baseline_mse": baseline, "steps": last["step"], "minutes": round(last["elapsed_s"] / 60, 3),
        "solved": last["test_mse"] < 0.01, "csv": str(out / "adding.csv"), "png": str(out / "adding.png"),
        "config": asdict(config),
    }

