"""``rnnkit forecast train|eval|predict`` end to end on a tiny budget, resume, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import refuse_writes_in

from rnnkit.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def csv_series(tmp_path):
    t = np.arange(96)
    y = 20 + 0.1 * t + 4 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 0.3, len(t))
    temp = 10 + np.cos(2 * np.pi * t / 12)
    path = tmp_path / "sales.csv"
    path.write_text("month,temp,sales\n" + "".join(f"m{i},{a:.3f},{b:.3f}\n" for i, (a, b) in enumerate(
        zip(temp, y, strict=True))), encoding="utf-8")
    return path


def test_train_eval_predict(tmp_path, capsys, csv_series):
    pytest.importorskip("statsmodels", reason="the ARIMA baseline needs the classical extra (statsmodels)")
    out = tmp_path / "run"
    code, _, err = run(capsys, "forecast", "train", "--data", csv_series, "--target", "sales", "--covariates", "temp",
                       "--period", "12", "--horizon", "12", "--lookback", "24", "--season", "12", "--hidden-size", "8",
                       "--max-steps", "12", "--quiet", "--out", out)
    assert code == 0, err
    assert {"config.json", "model.safetensors", "best.safetensors", "trainer_state.safetensors",
            "metrics.csv"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "forecaster" and config["data"]["columns"] == ["sales", "temp"]

    code, text, err = run(capsys, "forecast", "eval", out, "--json")
    assert code == 0, err
    result = json.loads(text)
    for key in ("mase", "mase_seasonal_naive", "mase_arima", "mae", "rmse", "mae_arima", "rmse_seasonal_naive"):
        assert np.isfinite(result[key]), key
    assert result["test_size"] == 12 and result["mase_period"] == 12
    sales = [float(line.split(",")[2]) for line in csv_series.read_text().splitlines()[1:]]
    truth = np.array(result["truth"])
    assert truth.tolist() == pytest.approx(sales[-12:])  # the values it reports, checked with NumPy
    for key in ("", "_naive", "_seasonal_naive", "_arima"):
        forecast = np.array(result[f"forecast{key}"])
        assert forecast.shape == (12,)
        assert result[f"mae{key}"] == pytest.approx(np.mean(np.abs(forecast - truth)))
        assert result[f"rmse{key}"] == pytest.approx(np.sqrt(np.mean((forecast - truth) ** 2)))
    assert result["forecast_seasonal_naive"] == pytest.approx(sales[-24:-12])  # the training part's last season
    assert (out / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, text, _ = run(capsys, "forecast", "eval", out)
    assert code == 0 and "seasonal naive (period 12)" in text

    code, text, _ = run(capsys, "forecast", "predict", out)
    assert code == 0 and [int(line.split(",")[0]) for line in text.split()] == list(range(1, 13))
    code, text, _ = run(capsys, "forecast", "predict", out, "--data", csv_series, "--json")
    assert code == 0 and len(json.loads(text)["forecast"]) == 12
    lines = csv_series.read_text().splitlines()
    no_temp = tmp_path / "no-temp.csv"
    no_temp.write_text("".join(f"{month},{sales}\n" for month, _, sales in (r.split(",") for r in lines)))
    code, text, err = run(capsys, "forecast", "predict", out, "--data", no_temp)
    assert code == 2 and text == "" and len(err.strip().splitlines()) == 1
    assert "has no column 'temp'" in err and "the model reads 'sales', 'temp': pass a CSV that has those" in err
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:24]) + "\n")  # the header and 23 steps; the model reads 24
    code, text, err = run(capsys, "forecast", "predict", out, "--data", short)
    assert code == 2 and text == "" and "the series has 23 steps, the model reads the last 24" in err
    short.write_text("\n".join(lines[:25]) + "\n")
    code, text, err = run(capsys, "forecast", "predict", out, "--data", short)
    assert code == 0, err

    code, _, err = run(capsys, "forecast", "train", "--resume", out, "--max-steps", "20", "--quiet")
    assert code == 0, err
    assert "resuming at step 12" in err
    code, _, err = run(capsys, "forecast", "train", "--resume", out, "--hidden-size", "16", "--quiet")
    assert code == 2 and "cannot change when resuming" in err


@pytest.mark.parametrize("argv, fragment", [
    (["forecast", "train", "--max-steps", "1"], "pass --data"),
    (["forecast", "train", "--data", "nope.csv", "--max-steps", "1"], "neither a CSV file nor a named series"),
    (["forecast", "train", "--data", "{csv}", "--horizon", "4", "--test-size", "8"], "longer than --horizon"),
    (["forecast", "train", "--data", "{csv}", "--mode", "autoregressive", "--covariates", "temp"], "direct"),
    (["forecast", "train", "--data", "{csv}", "--target", "price"], "no column 'price'"),
    (["forecast", "train", "--data", "{csv}", "--period", "100000"], "--period 100000 needs more than"),
])
def test_errors_are_one_line(tmp_path, capsys, csv_series, argv, fragment):
    code, _, err = run(capsys, *[a.replace("{csv}", str(csv_series)) for a in argv], "--out", tmp_path / "r")
    assert code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1, err


def test_a_season_the_training_part_cannot_hold(tmp_path, capsys):
    pytest.importorskip("aeon", reason="the airline series ships with the classical extra (aeon)")
    code, _, err = run(capsys, "forecast", "train", "--data", "airline", "--mase-period", "120",
                       "--out", tmp_path / "r")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--mase-period 120 needs more than that many training steps, and airline leaves 120" in err


def test_eval_of_a_missing_run(tmp_path, capsys):
    code, _, err = run(capsys, "forecast", "eval", tmp_path / "nowhere")
    assert code == 2 and "not a run directory" in err


def test_resume_a_language_model_run_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "kind": "language_model"}))
    code, _, err = run(capsys, "forecast", "train", "--resume", tmp_path, "--quiet")
    assert code == 2 and "holds a language_model run, not a forecaster — use `rnnkit train --resume|sample" in err
    code, _, err = run(capsys, "forecast", "eval", tmp_path)
    assert code == 2 and "not a forecaster" in err


def test_named_series_recipe(tmp_path, capsys):
    pytest.importorskip("aeon", reason="the airline series ships with aeon (the classical extra)")
    code, _, err = run(capsys, "forecast", "train", "--data", "airline", "--max-steps", "3", "--quiet",
                       "--out", tmp_path / "air")
    assert code == 0, err
    config = json.loads((tmp_path / "air" / "config.json").read_text())
    assert config["data"]["split"]["horizon"] == 24 and config["model"]["season"] == 12 and config["model"]["log"]


def test_eval_into_a_directory_it_cannot_write_fails_before_scoring(tmp_path, capsys, csv_series, monkeypatch):
    import rnnkit.forecast

    out = tmp_path / "run"
    code, _, err = run(capsys, "forecast", "train", "--data", csv_series, "--target", "sales", "--horizon", "6",
                       "--lookback", "12", "--hidden-size", "4", "--max-steps", "2", "--quiet", "--out", out)
    assert code == 0, err
    def no_scoring(*args, **kwargs):
        raise AssertionError("the forecast was scored before the output was checked")

    refuse_writes_in(monkeypatch, out)
    monkeypatch.setattr(rnnkit.forecast, "evaluate", no_scoring)
    code, stdout, err = run(capsys, "forecast", "eval", out)
    assert code == 2 and stdout == "" and err.startswith(f"error: {out / 'forecast.png'}: Permission denied")
