"""Forecasting data and baselines: CSV reading and its errors, windows and the validation split, MAE / RMSE /
MASE against hand computation, seasonal naive against a hand-built forecast, and the issue's baseline figures."""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.baselines.forecast import ArimaSpec, mae, mase, naive, rmse, scores, search_arima, seasonal_naive
from rnnkit.data.forecasting import load_series, read_csv_series, split_series, train_val_windows, windows
from rnnkit.errors import CorpusError


def write(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_header_target_and_covariates(tmp_path):
    path = write(tmp_path, "date,temp,sales\n2020-01,1.5,10\n2020-02,2.5,12\n2020-03,3.5,11\n")
    s = read_csv_series(path)
    assert s.columns == ["sales"] and s.values[:, 0].tolist() == [10, 12, 11]
    s = read_csv_series(path, target="temp", covariates=["sales"])
    assert s.columns == ["temp", "sales"] and s.values.shape == (3, 2) and s.values[0].tolist() == [1.5, 10]


def test_csv_without_header_uses_column_numbers(tmp_path):
    path = write(tmp_path, "1,5\n2,6\n3,7\n4,8\n")
    assert read_csv_series(path).values[:, 0].tolist() == [5, 6, 7, 8]
    assert read_csv_series(path, target="1", covariates=["2"]).values[0].tolist() == [1, 5]


def test_csv_without_header_whose_first_column_is_a_date(tmp_path):
    """The first row's date is not a number, but neither is the date below it: data, not a header."""
    path = write(tmp_path, "2020-01-01,100.5\n2020-01-02,101.5\n2020-01-03,99.0\n")
    s = read_csv_series(path)
    assert s.values[:, 0].tolist() == [100.5, 101.5, 99.0] and s.columns == ["2"]


def test_csv_header_that_names_the_value_column_with_a_number(tmp_path):
    """pandas writes a Series as ``date,0``: "date" has no digit over "1949-01", which has some — a header."""
    path = write(tmp_path, "date,0\n1949-01,112\n1949-02,118\n1949-03,132\n")
    s = read_csv_series(path)
    assert s.values[:, 0].tolist() == [112, 118, 132] and s.columns == ["0"]


@pytest.mark.parametrize("text, kwargs, fragment", [
    ("", {}, "empty"),
    ("a,b\n1,2\n3,4\n5,6\n", {"target": "c"}, "no column 'c'"),
    ("1,2\n3,4\n5,6\n", {"target": "x"}, "by number"),
    ("a,b\n1,2\n3,x\n5,6\n", {}, r"s.csv:3 column .b. is .x."),
    ("a,b\n1,2\n3\n5,6\n", {}, "1 fields"),
    ("a\n1\nnan\n3\n", {}, "NaN"),
    ("a\n1\n2\n", {}, "2 rows"),
    ("a,b\n1,2\n3,4\n5,6\n", {"target": "a", "covariates": ["a"]}, "different columns"),
])
def test_csv_errors_say_what_to_do(tmp_path, text, kwargs, fragment):
    with pytest.raises(CorpusError, match=fragment):
        read_csv_series(write(tmp_path, text), **kwargs)


def test_binary_missing_and_unknown_sources(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(b"a\n1\0\n")
    with pytest.raises(CorpusError, match="NUL"):
        read_csv_series(path)
    path.write_bytes(b"a\n\xff\n")
    with pytest.raises(CorpusError, match="UTF-8"):
        read_csv_series(path)
    with pytest.raises(CorpusError, match="neither a CSV file nor a named series"):
        load_series(str(tmp_path / "nope.csv"))
    with pytest.raises(CorpusError, match="named univariate"):
        load_series("airline", target="x")


def test_windows_and_split():
    values = np.arange(20.0)[:, None]
    ex = windows(values, lookback=4, horizon=2, ends=range(6, 8))
    assert [x[:, 0].tolist() for x in ex.inputs] == [[0, 1, 2, 3], [1, 2, 3, 4]]
    assert ex.targets.tolist() == [[4, 5], [5, 6]]
    tr, va = train_val_windows(values, lookback=4, horizon=2, val_size=3)
    assert va.targets[:, -1].tolist() == [17, 18, 19]  # targets ending in the last 3 steps validate
    assert max(t[-1] for t in tr.targets) < 17  # no validation value is a training target
    assert min(len(x) for x in tr.inputs) == 2  # short windows at the start: half the lookback
    with pytest.raises(CorpusError, match="validation tail"):
        train_val_windows(values, 4, 2, 30)
    train, test = split_series(values, 5)
    assert len(train) == 15 and test[0, 0] == 15
    with pytest.raises(CorpusError, match="hold out"):
        split_series(values, 20)


def test_scores_against_hand_computation():
    train = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    truth, forecast = np.array([6.0, 4.0, 8.0]), np.array([5.0, 5.0, 5.0])
    assert mae(truth, forecast) == pytest.approx((1 + 1 + 3) / 3)
    assert rmse(truth, forecast) == pytest.approx(np.sqrt((1 + 1 + 9) / 3))
    # m = 1: in-sample naive MAE = (2 + 1 + 3 + 1) / 4; m = 2: (1 + 2 + 2) / 3
    assert mase(train, truth, forecast, 1) == pytest.approx((5 / 3) / (7 / 4))
    assert mase(train, truth, forecast, 2) == pytest.approx((5 / 3) / (5 / 3))
    assert scores(train, truth, forecast, 1)["mase"] == pytest.approx((5 / 3) / (7 / 4))
    with pytest.raises(CorpusError, match="constant"):
        mase([2.0, 2.0, 2.0], truth, forecast, 1)


def test_naive_and_seasonal_naive_by_hand():
    train = np.array([1.0, 2, 3, 4, 5, 6, 7])
    assert naive(train, 3).tolist() == [7, 7, 7]
    assert seasonal_naive(train, 7, 3).tolist() == [5, 6, 7, 5, 6, 7, 5]
    assert seasonal_naive(train, 2, 1).tolist() == [7, 7]
    assert ArimaSpec((0, 1, 1), (0, 1, 1, 12), log=True).describe() == "ARIMA(0,1,1)(0,1,1)12 on log"
    assert ArimaSpec((9, 0, 0), trend="c").describe() == "AR(9) with constant"


def _needs_classical():
    pytest.importorskip("statsmodels", reason="the classical extra (statsmodels) is not installed")
    pytest.importorskip("aeon", reason="the classical extra (aeon) is not installed")


def test_the_issue_baseline_figures():
    """Issue 4's figures: airline (last 24 held out, m = 12) and sunspots (last 30, m = 1)."""
    _needs_classical()
    from rnnkit.baselines.forecast import baselines

    air = load_series("airline")
    assert len(air) == 144 and air.period == 12
    train, test = split_series(air.values[:, 0], 24)
    b = baselines(train, test, 12, 12, "airline")
    assert round(b["seasonal_naive"]["mase"], 2) == 2.49 and round(b["arima"]["mase"], 2) == 1.38
    sun = load_series("sunspots")
    assert len(sun) == 309
    train, test = split_series(sun.values[:, 0], 30)
    b = baselines(train, test, 11, 1, "sunspots")
    assert round(b["naive"]["mase"], 2) == 2.81 and round(b["seasonal_naive"]["mase"], 2) == 1.67
    assert round(b["arima"]["mase"], 2) == 1.30


def test_other_named_series_and_the_aic_search():
    _needs_classical()
    assert len(load_series("lynx")) == 114 and len(load_series("shampoo")) == 36
    spec = search_arima(np.cumsum(np.random.default_rng(0).normal(size=60)) + 50)
    assert spec.order[1] in (0, 1)
