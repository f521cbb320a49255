"""Vanishing and exploding gradients, measured (Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013).

BPTT sends the error at the last step back through every step: ``∂L/∂h_t = ∂L/∂h_{T-1} · Π_{k>t} ∂h_k/∂h_{k-1}``.
For the tanh RNN each factor is ``diag(1 - h_k²) W_hh``; when its norm is below 1 the product shrinks
geometrically with the distance T - 1 - t (the gradient vanishes: early inputs get no credit, and long-range
dependencies cannot be learnt), and when ``W_hh`` grows past spectral radius 1 it can grow geometrically
instead (the gradient explodes: one update throws the weights far away).

Part 1 (``gradient_flow.png``): ``‖∂L/∂h_t‖`` against t for the RNN, LSTM and GRU on the adding problem, at
initialisation and after a short training, where L is the squared error of the prediction read at the last
step. The LSTM's cell path ``c_t = f_t * c_{t-1} + ...`` and the GRU's ``h_t = z_t * h_{t-1} + ...`` multiply the
gradient by a gate per step instead of by ``W_hh``; gates near 1 keep the curve flat.

Part 2 (``exploding.png``): a tanh RNN trained by plain SGD at a learning rate too large for it, twice from the
same start on the same batches — without and with gradient-norm clipping. Unclipped, an update pushes the
spectral radius of ``W_hh`` past 1, the next gradient is orders of magnitude larger, and the run diverges to
inf within a few steps; clipped, each update is at most ``lr * max_norm`` long and training carries on.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.experiments.adding import AddingConfig, AddingRegressor, adding_batch
from rnnkit.experiments.common import (
    CELLS,
    TEST_SEED,
    fit,
    info,
    prepare_out,
    save_figure,
    setup,
    subplots,
    write_csv,
)


@dataclass
class GradientFlowConfig:
    """Both parts of the gradient-flow experiment. CLI flags are derived from these fields."""

    T: int = field(default=100, metadata={"help": "sequence length of the adding problem"})
    train_steps: int = field(default=1500, metadata={"help": "Adam updates per cell before the second measurement"})
    hidden_size: int = field(default=128, metadata={"help": "hidden units (H)"})
    batch_size: int = field(default=50, metadata={"help": "sequences per update (B)"})
    probe_size: int = field(default=200, metadata={"help": "sequences the gradient norms are averaged over"})
    lr: float = field(default=3e-3, metadata={"help": "learning rate (Adam) of the short training"})
    forget_bias: str = field(default="chrono", metadata={"help": "LSTM forget-gate bias at init: a number or chrono"})
    explode_lr: float = field(default=0.3, metadata={"help": "SGD learning rate of the exploding-gradient runs"})
    explode_steps: int = field(default=300, metadata={"help": "SGD updates in each exploding-gradient run"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm of the clipped run"})
    seed: int = field(default=0, metadata={"help": "random seed (initialisation and training batches)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})

    def __post_init__(self) -> None:
        if self.probe_size <= 0:  # checked here: AddingConfig would name it --test-size
            raise ConfigError(f"--probe-size must be positive (got {self.probe_size}) — pass a whole number >= 1")
        # The shared checks (T, sizes, lr, forget bias) are AddingConfig's.
        AddingConfig(T=self.T, hidden_size=self.hidden_size, batch_size=self.batch_size, lr=self.lr,
                     forget_bias=self.forget_bias, test_size=self.probe_size, seed=self.seed, device=self.device)
        for name in ("train_steps", "explode_steps"):
            if getattr(self, name) <= 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be positive (got {getattr(self, name)}) — pass a whole number >= 1")
        if not self.explode_lr > 0 or not self.grad_clip > 0:
            raise ConfigError(f"--explode-lr and --grad-clip must be positive (got {self.explode_lr}, "
                              f"{self.grad_clip}) — pass e.g. --explode-lr 0.3 --grad-clip 1")


def state_gradient_norms(model: AddingRegressor, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """``‖∂L_i/∂h_t‖`` for t = 0..T-1 (last layer), averaged over the sequences i of ``x (B, T, C)``.

    ``L_i`` is the squared error of sequence i's prediction from its last state. The layer is stepped one time
    step per call, so the state each call returns is the very tensor the next step reads: its ``.grad`` is the
    full gradient reaching ``h_t`` (through the recurrence, not only the direct path to the head). For the LSTM
    the gradient reaching the cell state ``c_t`` comes back too, under ``"c"`` (NaN at the last step, which the
    loss reads only through ``h``). Computed on a float64 copy of the model, so that norms of 1e-40 and less
    do not underflow to 0. Returns ``{"h": (T,), ...}`` on the CPU.
    """
    model = copy.deepcopy(model).double()
    x, y = x.double(), y.double()
    states, state = [], None
    with torch.enable_grad():
        for t in range(x.shape[1]):
            _, state = model.rnn(x[:, t:t + 1], state)  # h (L, B, H), or (h, c)
            parts = state if isinstance(state, tuple) else (state,)
            for p in parts:
                p.retain_grad()
            states.append(parts)
        prediction = model.head(states[-1][0][-1]).squeeze(-1)  # (B,)
        (prediction - y).pow(2).sum().backward()

    def norm(g: Tensor | None) -> Tensor:
        return torch.tensor(math.nan) if g is None else g[-1].norm(dim=-1).mean().cpu()

    return {name: torch.stack([norm(s[k].grad) for s in states]) for k, name in enumerate(("h", "c")[:len(states[0])])}


def _ratio(norms: Tensor) -> float | None:
    last = float(norms[-1])
    return float(norms[0]) / last if last > 0 else None


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def vanishing(config: GradientFlowConfig, device: torch.device, log=info) -> tuple[list[dict], dict, dict]:
    """Part 1: per-step gradient norms for every cell at init and after ``train_steps`` updates."""
    probe_x, probe_y = (t.to(device) for t in adding_batch(config.probe_size, config.T,
                                                          torch.Generator().manual_seed(TEST_SEED)))
    curves: dict[str, Tensor] = {}
    summary, test_mse = {}, {}
    for cell in CELLS:
        torch.manual_seed(config.seed)
        model = AddingRegressor(cell, config.hidden_size, forget_bias=config.forget_bias, T=config.T).to(device)
        before = state_gradient_norms(model, probe_x, probe_y)
        log(f"{cell.upper()}: training {config.train_steps} steps on the adding problem, T={config.T}")
        train = AddingConfig(cell=cell, T=config.T, minutes=1e6, max_steps=config.train_steps,
                             hidden_size=config.hidden_size, batch_size=config.batch_size, lr=config.lr,
                             eval_every=max(config.train_steps // 5, 1), seed=config.seed)

        @torch.no_grad()
        def evaluate(m: nn.Module) -> dict:
            return {"probe_mse": nn.functional.mse_loss(m(probe_x).logits, probe_y).item()}

        rows = fit(model, train, lambda B, g: adding_batch(B, config.T, g), evaluate, "train_mse", log)
        after = state_gradient_norms(model, probe_x, probe_y)
        for stage, norms in (("init", before), ("trained", after)):
            for part, values in norms.items():
                curves[f"{cell}{'_c' if part == 'c' else ''}_{stage}"] = values
        summary[cell] = {"init": _ratio(before["h"]), "trained": _ratio(after["h"])}
        test_mse[cell] = rows[-1]["probe_mse"]
        log(f"{cell.upper()}: ‖∂L/∂h_0‖ / ‖∂L/∂h_T-1‖ = {_fmt(summary[cell]['init'])} at init, "
            f"{_fmt(summary[cell]['trained'])} trained (MSE {test_mse[cell]:.4f})")
    table = [{"t": t, **{k: float(v[t]) for k, v in curves.items()}} for t in range(config.T)]
    return table, summary, test_mse


def _sgd_run(config: GradientFlowConfig, device: torch.device, clip: bool) -> list[dict]:
    """One tanh-RNN run by plain SGD; a row per step until the end or the first non-finite gradient."""
    torch.manual_seed(config.seed)
    model = AddingRegressor("rnn", config.hidden_size, T=config.T).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.explode_lr)
    generator = torch.Generator().manual_seed(config.seed)
    rows = []
    for step in range(1, config.explode_steps + 1):
        x, y = (t.to(device) for t in adding_batch(config.batch_size, config.T, generator))
        loss = model(x, targets=y).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip if clip else math.inf).item()
        w_hh = model.rnn.cells[0].weight_hh.detach().cpu().double()
        radius = torch.linalg.eigvals(w_hh).abs().max().item() if w_hh.isfinite().all() else math.inf
        rows.append({"step": step, "loss": loss.item(), "grad_norm": norm, "spectral_radius": radius})
        if not (math.isfinite(norm) and math.isfinite(loss.item())):
            break
        optimizer.step()
    return rows


def exploding(config: GradientFlowConfig, device: torch.device, log=info) -> tuple[list[dict], dict]:
    """Part 2: the same SGD run without and with clipping."""
    runs = {name: _sgd_run(config, device, clip) for name, clip in (("unclipped", False), ("clipped", True))}
    table = []
    for step in range(1, config.explode_steps + 1):
        row: dict = {"step": step}
        for name, rows in runs.items():
            r = rows[step - 1] if step <= len(rows) else {}
            for key in ("loss", "grad_norm", "spectral_radius"):
                row[f"{key}_{name}"] = r.get(key, "")
        table.append(row)
    summary = {"lr": config.explode_lr, "grad_clip": config.grad_clip, "steps": config.explode_steps}
    for name, rows in runs.items():
        finite = [r["grad_norm"] for r in rows if math.isfinite(r["grad_norm"])]
        diverged = next((r["step"] for r in rows if not (math.isfinite(r["grad_norm"]) and math.isfinite(r["loss"]))),
                        None)
        summary[name] = {"max_grad_norm": max(finite) if finite else None, "diverged_at": diverged,
                         "final_loss": _finite(rows[-1]["loss"]),
                         "max_spectral_radius": _finite(max(r["spectral_radius"] for r in rows))}
        log(f"SGD lr {config.explode_lr:g}, {name}: max gradient norm {_fmt(summary[name]['max_grad_norm'])}, "
            + (f"diverged at step {diverged}" if diverged else f"final loss {rows[-1]['loss']:.4f}"))
    return table, summary


def _plot_vanishing(table: list[dict], test_mse: dict, config: GradientFlowConfig, path: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(12, 4.5), dpi=100, sharey=True)
    t = [r["t"] for r in table]
    colors = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
    for ax, stage in zip(axes, ("init", "trained"), strict=True):
        for cell in CELLS:
            label = cell.upper() + (f" (MSE {test_mse[cell]:.3f})" if stage == "trained" else "")
            ax.plot(t, [r[f"{cell}_{stage}"] for r in table], color=colors[cell], lw=1.6, label=label + " ‖∂L/∂h_t‖")
            if f"{cell}_c_{stage}" in table[0]:
                ax.plot(t, [r[f"{cell}_c_{stage}"] for r in table], color=colors[cell], lw=1, ls="--",
                        label="LSTM ‖∂L/∂c_t‖")
        ax.set_yscale("log")
        ax.set_xlabel("time step t (the loss is read at t = T-1)")
        ax.set_title("at initialisation" if stage == "init" else f"after {config.train_steps} training steps")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("gradient norm (log scale)")
    fig.suptitle(f"How far back the error reaches: adding problem, T={config.T}, H={config.hidden_size}")
    save_figure(fig, path)


def _plot_exploding(table: list[dict], config: GradientFlowConfig, path: Path) -> None:
    fig, axes = subplots(3, 1, figsize=(8, 8), dpi=100, sharex=True)
    for name, color in (("unclipped", "tab:red"), ("clipped", "tab:blue")):
        rows = [r for r in table if r[f"loss_{name}"] != ""
                and math.isfinite(r[f"grad_norm_{name}"]) and math.isfinite(r[f"loss_{name}"])]
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes, ("grad_norm", "loss", "spectral_radius"), strict=True):
            ax.plot(steps, [r[f"{key}_{name}"] for r in rows], color=color, lw=1.2, label=name)
        if len(rows) < len(table):
            axes[0].axvline(len(rows) + 1, color=color, ls=":", lw=1, label=f"{name}: non-finite at step "
                                                                             f"{len(rows) + 1}")
    axes[0].axhline(config.grad_clip, color="gray", ls="--", lw=1, label=f"clip threshold {config.grad_clip:g}")
    axes[2].axhline(1.0, color="gray", ls="--", lw=1)
    for ax, label in zip(axes, ("gradient norm\n(before clipping)", "training MSE", "spectral radius\nof W_hh"),
                         strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[2].set_xlabel("SGD step")
    axes[0].set_title(f"tanh RNN, SGD lr {config.explode_lr:g}, T={config.T}: without and with gradient clipping")
    save_figure(fig, path)


def run_gradient_flow(config: GradientFlowConfig, out: Path | str | None = None, log=info) -> dict:
    """Both parts; writes gradient_flow.csv/png and exploding.csv/png; returns the summary figures."""
    device = setup(config)
    out = prepare_out(out, "gradient-flow", ("gradient_flow.csv", "gradient_flow.png", "exploding.csv",
                                             "exploding.png"))
    table, ratios, test_mse = vanishing(config, device, log)
    write_csv(table, out / "gradient_flow.csv")
    _plot_vanishing(table, test_mse, config, out / "gradient_flow.png")
    explode_table, explode = exploding(config, device, log)
    write_csv(explode_table, out / "exploding.csv")
    _plot_exploding(explode_table, config, out / "exploding.png")
    return {
        "experiment": "gradient-flow", "T": config.T, "train_steps": config.train_steps,
        "grad_ratio_first_last": ratios, "trained_mse": test_mse, "exploding": explode,
        "csv": [str(out / "gradient_flow.csv"), str(out / "exploding.csv")],
        "png": [str(out / "gradient_flow.png"), str(out / "exploding.png")], "config": asdict(config),
    }

