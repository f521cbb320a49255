"""Classical forecasts an RNN must beat on the same held-out tail, and the scores they are compared by.

MASE (Hyndman & Koehler 2006) divides the forecast's mean absolute error by the in-sample mean absolute error of the
seasonal-naive forecast with period ``m`` on the training part: ``mean|y - ŷ| / mean_t |y_t - y_{t-m}|``; below 1
beats that one-step baseline. ARIMA comes from statsmodels (the ``classical`` extra), imported when it is fitted.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np

from rnnkit.data.series import EXTRA
from rnnkit.errors import CorpusError, RnnkitError


# -- scores --------------------------------------------------------------------------------------------------
def mae(truth, forecast) -> float:
    return float(np.mean(np.abs(np.asarray(truth, float) - np.asarray(forecast, float))))


def rmse(truth, forecast) -> float:
    return float(np.sqrt(np.mean((np.asarray(truth, float) - np.asarray(forecast, float)) ** 2)))


def mase(train, truth, forecast, m: int = 1) -> float:
    """MAE of ``forecast`` over the in-sample MAE of the lag-``m`` seasonal-naive forecast on ``train``."""
    train = np.asarray(train, float)
    if not 0 < m < len(train):
        raise CorpusError(f"MASE with season m={m} needs more than {m} training steps (got {len(train)})")
    scale = float(np.mean(np.abs(train[m:] - train[:-m])))
    if scale == 0:
        raise CorpusError(f"the training part is constant at lag {m}, so MASE is undefined — use MAE or RMSE")
    return mae(truth, forecast) / scale


def scores(train, truth, forecast, m: int) -> dict:
    return {"mase": mase(train, truth, forecast, m), "mae": mae(truth, forecast), "rmse": rmse(truth, forecast)}


# -- naive forecasts -----------------------------------------------------------------------------------------
def naive(train, horizon: int) -> np.ndarray:
    """The last observed value, repeated."""
    return np.full(horizon, float(np.asarray(train)[-1]))


def seasonal_naive(train, horizon: int, period: int) -> np.ndarray:
    """``ŷ_{T+h} = y_{T+h-p·k}``, ``k = ceil(h/p)``: the last observed season, repeated."""
    train = np.asarray(train, float)
    if not 0 < period <= len(train):
        raise CorpusError(f"a seasonal-naive forecast with period {period} needs at least {period} training steps")
    return train[len(train) - period + np.arange(horizon) % period]


# -- ARIMA ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArimaSpec:
    """A SARIMAX model: ``order (p, d, q)``, ``seasonal (P, D, Q, s)``, ``trend`` ('n' or 'c'), fitted on the log
    of the series when ``log``."""

    order: tuple[int, int, int]
    seasonal: tuple[int, int, int, int] = (0, 0, 0, 0)
    trend: str = "n"
    log: bool = False

    def describe(self) -> str:
        p, d, q = self.order
        text = f"ARIMA({p},{d},{q})" if d or q or not p else f"AR({p})"
        if self.seasonal[3]:
            text += "({},{},{}){}".format(*self.seasonal)
        return text + (" with constant" if self.trend == "c" else "") + (" on log" if self.log else "")


#: the classical model each named series is known by: Box & Jenkins' airline model, and AR(9) for the sunspots
KNOWN = {
    "airline": ArimaSpec((0, 1, 1), (0, 1, 1, 12), log=True),
    "sunspots": ArimaSpec((9, 0, 0), trend="c"),
}


def _sarimax():
    try:
        from statsmodels.tsa.statespace.sarimax import SARIMAX
    except ImportError:
        raise RnnkitError(f"the ARIMA baseline needs statsmodels — {EXTRA}") from None
    return SARIMAX


def fit_arima(train, spec: ArimaSpec):
    """A fitted statsmodels SARIMAX results object (warnings about convergence are silenced, not hidden: the
    score shows how good the fit is)."""
    train = np.asarray(train, float)
    if spec.log and (train <= 0).any():
        raise CorpusError("an ARIMA on the log needs a positive series")
    y = np.log(train) if spec.log else train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _sarimax()(y, order=spec.order, seasonal_order=spec.seasonal, trend=spec.trend).fit(disp=False)


def arima_forecast(train, horizon: int, spec: ArimaSpec) -> np.ndarray:
    f = np.asarray(fit_arima(train, spec).forecast(horizon), float)
    return np.exp(f) if spec.log else f


def search_arima(train, period: int = 1) -> ArimaSpec:
    """A small AIC search: p, q in 0..2, d in 0..1 (with a constant when d = 0), and when the series holds three
    seasons or more of period > 1, a seasonal (0,1,1) term or none. The lowest AIC wins."""
    train = np.asarray(train, float)
    seasonals = [(0, 0, 0, 0)] + ([(0, 1, 1, period)] if period > 1 and len(train) >= 3 * period else [])
    best, best_aic = None, np.inf
    for p, d, q, seasonal in itertools.product(range(3), range(2), range(3), seasonals):
        spec = ArimaSpec((p, d, q), seasonal, trend="c" if d == 0 and seasonal[1] == 0 else "n")
        try:
            aic = float(fit_arima(train, spec).aic)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.isfinite(aic) and aic < best_aic:
            best, best_aic = spec, aic
    if best is None:
        raise CorpusError("no ARIMA model could be fitted to the training part — it may be too short")
    return best


def baselines(train, truth, period: int, mase_period: int, name: str | None = None) -> dict:
    """Naive, seasonal-naive (period ``period``) and ARIMA (``KNOWN[name]`` or an AIC search) forecasts of
    ``truth``, each scored: ``{"naive": {...}, "seasonal_naive": {...}, "arima": {..., "model": text}}``, with
    each forecast under ``"forecast"``."""
    H = len(truth)
    spec = KNOWN.get(name or "") or search_arima(train, period)
    out = {}
    for key, forecast in (("naive", naive(train, H)), ("seasonal_naive", seasonal_naive(train, H, period)),
                          ("arima", arima_forecast(train, H, spec))):
        out[key] = {**scores(train, truth, forecast, mase_period), "forecast": forecast}
    out["arima"]["model"] = spec.describe()
    return out
