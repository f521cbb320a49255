"""``rnnkit forecast train|predict|eval``: many-to-one forecasting of a series' next H values."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnkit import __version__
from rnnkit.cli.common import add_load_args, add_run_args, budget, info, new_run_dir, stopped
from rnnkit.cliargs import Parser, add_dataclass_args, given, output_file
from rnnkit.errors import ConfigError, CorpusError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The forecasting verbs under ``rnnkit forecast``."""
    from rnnkit.forecast import ForecastDataConfig, ForecastTrainConfig
    from rnnkit.models.forecaster import ForecasterConfig

    group = sub.add_parser("forecast", help="forecast a series: train, predict, eval",
                           description="Forecast the next H values of a series with a recurrent network.")
    verbs = group.add_subparsers(dest="verb", required=True, parser_class=Parser)

    p = verbs.add_parser("train", help="train a forecaster on the training part of a series",
                         description="Train on sliding windows of the training part; the last --test-size steps "
                                     "are held out, and windows ending in the last --val-size steps validate.")
    add_run_args(p, "forecast-")
    p.set_defaults(func=cmd_train, data_flags=add_dataclass_args(p, ForecastDataConfig, "data"),
                   model_flags=add_dataclass_args(p, ForecasterConfig, "model"),
                   train_flags=add_dataclass_args(p, ForecastTrainConfig, "training", {
                       "epochs": "50, or a named series' own", "batch_size": "32, or a named series' own"}))

    p = verbs.add_parser("eval", help="score the held-out forecast against naive, seasonal-naive and ARIMA")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plot", type=output_file(".png"),
                   help="PNG of history, truth and forecasts (default: RUN_DIR/forecast.png)")
    add_load_args(p)
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("predict", help="forecast the H steps after the end of a series")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--data", help="series to continue, with the run's columns (default: the run's own, all of it)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_load_args(p)
    p.set_defaults(func=cmd_predict)


# -- train ---------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import CONFIG, FORMAT_VERSION, build_model, read_config, write_json
    from rnnkit.forecast import KIND, RECIPES, ForecastDataConfig, ForecastTrainConfig, resolve_data, split
    from rnnkit.models.forecaster import ForecasterConfig, SequenceForecaster
    from rnnkit.train.batches import BatchTrainer

    data_flags, model_flags = given(args, args.data_flags), given(args, args.model_flags)
    train_flags = given(args, args.train_flags)
    if args.resume:
        run_dir = args.resume
        if args.out is not None and args.out.resolve() != run_dir.resolve():
            raise ConfigError("--resume continues RUN_DIR in place — drop --out or make it the same directory")
        config = read_config(run_dir, kind=KIND)
        changed = [k for k, v in {**data_flags, **model_flags}.items()
                   if config["model"].get(k, config["data"]["split"].get(k)) != v]
        if changed:
            what = ", ".join("--" + k.replace("_", "-") for k in changed)
            raise ConfigError(f"{what} cannot change when resuming — resume without it, or start a new --out")
        dc, series = resolve_data(ForecastDataConfig(**config["data"]["split"]))
        _check_same_data(series, config)
        model = build_model(config)
        train_config = ForecastTrainConfig.resumed(config["train"], train_flags)
    else:
        run_dir = new_run_dir(args, "forecast")
        dc, series = resolve_data(ForecastDataConfig(**data_flags))
        recipe = RECIPES.get(dc.data, {})
        train_config = ForecastTrainConfig(**{"epochs": 50, **recipe.get("train", {}), **train_flags})
        if train_config.epochs is None and not train_config.max_steps and not train_config.minutes:
            train_config.epochs = 50
        m = ForecasterConfig(input_size=series.values.shape[1], horizon=dc.horizon,
                             **{**recipe.get("model", {}), **model_flags})
        torch.manual_seed(train_config.seed)
        model = SequenceForecaster(m)
        config = {"format_version": FORMAT_VERSION, "kind": KIND, "rnnkit_version": __version__,
                  "model": m.to_dict(), "train": train_config.to_dict(),
                  "data": {"split": dc.to_dict(), "name": series.name, "columns": series.columns,
                           "steps": len(series), "sha256": _digest(series.values)}}
    train, test, tr, va = split(series, dc, model.config.season)
    if not args.resume:
        model.fit_scaling([train])
    trainer = BatchTrainer(model, tr, va, train_config, run_dir, classes=False, show_progress=not args.quiet)
    if args.resume:
        trainer.resume()
        config["train"] = train_config.to_dict()
        trainer.pending_config = config  # written with the first checkpoint: a resume that fails changes nothing
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, config)

    c = model.config
    info(f"data: {series.name}, {len(series)} steps x {len(series.columns)} columns; test = last {dc.test_size}, "
         f"{len(tr)} training / {len(va)} validation windows (lookback {dc.lookback}, horizon {dc.horizon})")
    info(f"model: {c.members}x {c.num_layers}x{c.hidden_size} {c.cell.upper()}, {c.mode}, season {c.season}"
         f"{', log' if c.log else ''}, {model.num_parameters():,} parameters on {trainer.device}")
    verb = f"resuming at step {trainer.step}" if args.resume else "training"
    info(f"{verb}: batch {train_config.batch_size}, budget {budget(train_config)}; run dir {run_dir}")
    summary = trainer.fit()
    if stopped(summary, "rnnkit forecast train", run_dir):
        return 130
    info(f"done: {summary['step']} steps in {summary['elapsed_s']:.0f} s; validation loss {summary['val_loss']:.4f}, "
         f"best {summary['best_val_loss']:.4f}; score it with: rnnkit forecast eval {run_dir}")
    return 0


def _digest(values) -> str:
    import hashlib

    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes()).hexdigest()


def _check_same_data(series, config: dict) -> None:
    if _digest(series.values) != config["data"]["sha256"]:
        raise CorpusError(f"the series {config['data']['split']['data']} changed since the run was trained — "
                          "restore it, or train a new run")


# -- eval ----------------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import check_writable, weights_read
    from rnnkit.forecast import ForecastDataConfig, evaluate, load_forecaster, resolve_data
    from rnnkit.train import resolve_device

    device = resolve_device(args.device)
    model, config = load_forecaster(args.run_dir, args.weights, device)
    args.weights = weights_read(args.run_dir, args.weights)  # what was read: best falls back to last
    _, series = resolve_data(ForecastDataConfig(**config["data"]["split"]))
    _check_same_data(series, config)
    plot = args.plot or args.run_dir / "forecast.png"
    check_writable(plot)  # before the scoring (ARIMA takes a while): a read-only run directory fails now
    result = evaluate(model, config, series, device, plot=plot)
    result["weights"] = args.weights
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{series.name}, last {result['test_size']} steps held out; MASE scale m = {result['mase_period']}")
    print(f"{'forecast':<36} {'MASE':>8} {'MAE':>10} {'RMSE':>10}")
    rows = [("RNN", ""), ("naive", "_naive"), (f"seasonal naive (period {result['period']})", "_seasonal_naive"),
            (result["arima_model"], "_arima")]
    for name, key in rows:
        print(f"{name:<36} {result['mase' + key]:8.3f} {result['mae' + key]:10.3f} {result['rmse' + key]:10.3f}")
    print(f"plot: {result['plot']}")
    return 0


# -- predict -------------------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from rnnkit.data.forecasting import NAMED, load_series
    from rnnkit.forecast import forecast, load_forecaster
    from rnnkit.train import resolve_device

    device = resolve_device(args.device)
    model, config = load_forecaster(args.run_dir, args.weights, device)
    split = config["data"]["split"]
    if args.data is None:
        series = load_series(split["data"], split["target"], _covariates(split))
    elif args.data in NAMED:
        series = load_series(args.data)
    else:
        target, covariates = _columns(config)
        series = load_series(args.data, target, covariates,
                             fix=f"the model reads {', '.join(map(repr, [target, *covariates]))}: pass a CSV that has "
                                 "those columns")
    if series.values.shape[1] != model.config.input_size:
        raise CorpusError(f"{args.data} has {series.values.shape[1]} column(s), the model reads "
                          f"{model.config.input_size} ({', '.join(map(repr, config['data']['columns']))}) — pass a "
                          "CSV that has those columns")
    values = forecast(model, series.values, split["lookback"], device)
    if args.json:
        print(json.dumps({"series": series.name, "after_step": len(series), "forecast": values.tolist()}))
    else:
        for h, v in enumerate(values, 1):
            print(f"{h},{v:.6g}")
    return 0


def _covariates(split: dict) -> list[str]:
    return [c.strip() for c in (split.get("covariates") or "").split(",") if c.strip()]


def _columns(config: dict) -> tuple[str, list[str]]:
    """The trained-on column names, for a CSV given to predict."""
    cols = config["data"]["columns"]
    return cols[0], cols[1:]
