"""Forecasting end to end: which data and split, how it becomes windows, the run's config, loading a trained
forecaster, and scoring its held-out forecast against the classical baselines. The CLI verbs are thin over this.

The split: the last ``test_size`` steps are the test part, never seen in training or model choice. Of the rest
(the training part), windows whose targets end in its last ``val_size`` steps validate (they pick the best
checkpoint); the others train. The test forecast is one forecast from the end of the training part.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rnnkit.data.forecasting import NAMED, Series, load_series, split_series, train_val_windows
from rnnkit.errors import ConfigError
from rnnkit.train.batches import BatchTrainConfig

KIND = "forecaster"


@dataclass
class ForecastDataConfig:
    """What to forecast and how it is split; saved in config.json. CLI flags are derived from these fields."""

    data: str = field(default="", metadata={"help": f"a CSV file or a named series: {', '.join(NAMED)}"})
    target: str | None = field(default=None, metadata={
        "help": "CSV target column: a header name, or a 1-based number without a header (default: the last)"})
    covariates: str | None = field(default=None, metadata={"help": "CSV covariate columns, comma-separated"})
    period: int | None = field(default=None, metadata={
        "help": "seasonal period of the seasonal-naive baseline (default: the named series', else 1)"})
    mase_period: int | None = field(default=None, metadata={
        "help": "m of the MASE scale (default: the named series', else --period)"})
    lookback: int | None = field(default=None, metadata={"help": "steps the model reads (L; default 24)"})
    horizon: int | None = field(default=None, metadata={"help": "steps it forecasts (H; default --test-size or 12)"})
    test_size: int | None = field(default=None, metadata={"help": "held-out final steps (default: --horizon)"})
    val_size: int | None = field(default=None, metadata={
        "help": "final steps of the training part whose windows validate (default: --horizon)"})

    def covariate_list(self) -> list[str]:
        return [c.strip() for c in self.covariates.split(",") if c.strip()] if self.covariates else []

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ForecastTrainConfig(BatchTrainConfig):
    """A forecasting run: small data, so frequent validation (fp32, as every batch trainer by default)."""

    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW)"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up steps"})
    eval_interval: int = field(default=10, metadata={"help": "validate and checkpoint every N steps"})


#: settings for the named series, chosen by MAE on the validation tail of the training part (never the test part;
#: five members for sunspots because single seeds vary); flags given on the command line override them.
RECIPES = {
    "airline": {"data": {"lookback": 24, "horizon": 24}, "model": {"mode": "direct", "season": 12, "log": True},
                "train": {"epochs": 100, "batch_size": 16}},
    "sunspots": {"data": {"lookback": 40, "horizon": 30},
                 "model": {"mode": "autoregressive", "season": 0, "members": 5},
                 "train": {"epochs": 60, "batch_size": 32}},
    "lynx": {"data": {"lookback": 20, "horizon": 14}, "model": {"mode": "autoregressive", "season": 0, "log": True},
             "train": {"epochs": 60, "batch_size": 16}},
    "shampoo": {"data": {"lookback": 12, "horizon": 6}, "model": {"mode": "direct", "season": 1},
                "train": {"epochs": 100, "batch_size": 8}},
}


def resolve_data(dc: ForecastDataConfig) -> tuple[ForecastDataConfig, Series]:
    """Load the series and fill every unset field of ``dc`` (recipe of a named series, then the defaults)."""
    if not dc.data:
        raise ConfigError(f"pass --data: a CSV file or one of {', '.join(NAMED)}")
    series = load_series(dc.data, dc.target, dc.covariate_list())
    d = {**RECIPES.get(dc.data, {}).get("data", {}), **{k: v for k, v in dc.to_dict().items() if v is not None}}
    d.setdefault("period", series.period if dc.data in NAMED else 1)
    d.setdefault("mase_period", series.mase_period if dc.data in NAMED else d["period"])
    d.setdefault("lookback", 24)
    d.setdefault("horizon", d.get("test_size") or 12)
    d.setdefault("test_size", d["horizon"])
    d.setdefault("val_size", d["horizon"])
    out = ForecastDataConfig(**d)
    for name in ("period", "mase_period", "lookback", "horizon", "test_size", "val_size"):
        if getattr(out, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive (got {getattr(out, name)})")
    if out.test_size > out.horizon:
        raise ConfigError(f"--test-size {out.test_size} is longer than --horizon {out.horizon}: the test part is "
                          "scored on one forecast — raise --horizon or lower --test-size")
    steps = len(series.values) - out.test_size  # the training part: the seasonal scales are fitted on it
    for name in ("period", "mase_period"):
        if 0 < steps <= getattr(out, name):  # steps <= 0: split_series says the test part is too long
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(out, name)} needs more than that many training "
                              f"steps, and {series.name} leaves {steps} before its test part — lower it")
    return out, series


def split(series: Series, dc: ForecastDataConfig, min_length: int = 1):
    """``(train part (T, C), test part (test_size, C), training windows, validation windows)``."""
    train, test = split_series(series.values, dc.test_size)
    tr, va = train_val_windows(train, dc.lookback, dc.horizon, dc.val_size, min_length)
    return train, test, tr, va


def load_forecaster(run_dir: Path, weights: str = "best", device: str | torch.device = "cpu"):
    """``(model in eval mode, config)`` of a forecasting run directory."""
    from rnnkit.checkpoint import load_weights

    return load_weights(run_dir, weights, device, kind=KIND)


@torch.no_grad()
def forecast(model, history: np.ndarray, lookback: int, device: str | torch.device = "cpu") -> np.ndarray:
    """The next H values of the target after ``history (T, C)`` (raw values), from its last ``lookback`` steps."""
    if len(history) < lookback:
        raise ConfigError(f"the series has {len(history)} steps, the model reads the last {lookback} — pass a longer "
                          "history")
    x = torch.as_tensor(np.asarray(history[-lookback:], dtype=np.float32))[None].to(device)  # (1, L, C)
    return model(x).logits[0].double().cpu().numpy()  # (H,)


def evaluate(model, config: dict, series: Series, device: str | torch.device = "cpu", plot: Path | None = None,
             with_baselines: bool = True) -> dict:
    """The model's test-part forecast scored (MASE, MAE, RMSE) beside the naive, seasonal-naive and ARIMA
    forecasts, with the values themselves (``truth``, ``forecast``, ``forecast_<baseline>``); a PNG of history,
    truth and forecasts when ``plot`` is given."""
    from rnnkit.baselines.forecast import baselines, scores

    dc = ForecastDataConfig(**config["data"]["split"])
    train, test = split_series(series.values, dc.test_size)
    truth, history = test[:, 0], train[:, 0]
    ours = forecast(model, train, dc.lookback, device)[:dc.test_size]
    result = {**scores(history, truth, ours, dc.mase_period), "test_size": dc.test_size,
              "mase_period": dc.mase_period, "period": dc.period, "truth": truth.tolist(), "forecast": ours.tolist()}
    lines = {"RNN": ours}
    if with_baselines:
        base = baselines(history, truth, dc.period, dc.mase_period, dc.data)
        for key, b in base.items():
            result.update({f"{s}_{key}": b[s] for s in ("mase", "mae", "rmse")})
            result[f"forecast_{key}"] = np.asarray(b["forecast"], dtype=np.float64).tolist()
        result["arima_model"] = base["arima"]["model"]
        lines.update({"seasonal naive": base["seasonal_naive"]["forecast"], base["arima"]["model"]:
                      base["arima"]["forecast"]})
    if plot is not None:
        from rnnkit.plots import plot_forecast

        result["plot"] = str(plot_forecast(history, truth, lines, plot, title=f"{series.name}: "
                                           f"RNN MASE {result['mase']:.3f}"))
    return result
