"""Series to forecast: CSV files (a target column and optional covariates) and named series that ship inside
packages, cut into sliding windows (lookback L -> horizon H) for the many-to-one trainer.

statsmodels and aeon (the ``classical`` extra) are imported when a named series is loaded, not when rnnkit is.
Shape letters: T steps, C features (column 0 is the target), L lookback, H horizon.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.labeled import Examples
from rnnkit.data.series import EXTRA
from rnnkit.errors import CorpusError


@dataclass
class Series:
    """A multivariate series: ``values (T, C)`` float64 with the target in column 0; ``period`` is its natural
    period (12 for monthly data, 1 when it has none), the seasonal-naive forecast's; ``mase_period`` the ``m`` of
    its MASE scale."""

    name: str
    values: np.ndarray
    columns: list[str]
    period: int = 1
    mase_period: int = 1

    def __len__(self) -> int:
        return len(self.values)


# -- named series --------------------------------------------------------------------------------------------
def _airline() -> Series:
    from aeon.datasets import load_airline

    return Series("airline", np.asarray(load_airline(), dtype=np.float64)[:, None], ["passengers"], 12, 12)


def _sunspots() -> Series:
    from statsmodels.datasets import sunspots

    return Series("sunspots", sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)[:, None],
                  ["sunactivity"], 11, 1)


def _lynx() -> Series:
    from aeon.datasets import load_lynx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in aeon 1.6, still shipped
        return Series("lynx", np.asarray(load_lynx(), dtype=np.float64)[:, None], ["trappings"], 10, 1)


def _shampoo() -> Series:
    from aeon.datasets import load_shampoo_sales

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return Series("shampoo", np.asarray(load_shampoo_sales(), dtype=np.float64)[:, None], ["sales"], 12, 1)


FIX_COLUMNS = "pass --target/--covariates accordingly"
LARGEST = 1e30  # |value| past this, float32 arithmetic (the model, the scaler's output) overflows

#: name -> (loader, where it comes from)
NAMED = {
    "airline": (_airline, "monthly airline passengers 1949-1960, Box & Jenkins (aeon)"),
    "sunspots": (_sunspots, "yearly sunspot numbers 1700-2008 (statsmodels)"),
    "lynx": (_lynx, "yearly Canadian lynx trappings 1821-1934 (aeon)"),
    "shampoo": (_shampoo, "monthly shampoo sales over three years (aeon)"),
}


def load_series(source: str, target: str | None = None, covariates: list[str] | None = None,
                fix: str = FIX_COLUMNS) -> Series:
    """A named series (``airline``, ``sunspots``, ``lynx``, ``shampoo``) or a CSV file. ``fix`` is what a
    missing column's message tells the user to do."""
    if source in NAMED:
        if target or covariates:
            raise CorpusError(f"{source!r} is a named univariate series — --target and --covariates are for CSV files")
        try:
            return NAMED[source][0]()
        except ImportError:
            raise CorpusError(f"the {source} series ships with statsmodels/aeon — {EXTRA}") from None
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"{source} is neither a CSV file nor a named series ({', '.join(NAMED)}) — check the path")
    return read_csv_series(path, target, covariates, fix)


# -- CSV -----------------------------------------------------------------------------------------------------
def read_csv_series(path: str | Path, target: str | None = None, covariates: list[str] | None = None,
                    fix: str = FIX_COLUMNS) -> Series:
    """A series from a CSV file, one row per step in time order.

    With a header row (detected by ``_is_header``), ``target`` and ``covariates`` name columns; without one they
    are 1-based column numbers ("2"). The target defaults to the last column; other columns (e.g. a date) are
    ignored unless named as covariates. Every used cell must be a finite number.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise CorpusError(f"cannot read {path} ({e.strerror}) — check the path and its permissions") from None
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 (bad byte at offset {e.start}) — pass a UTF-8 CSV file") from None
    if "\0" in text:
        raise CorpusError(f"{path} is binary (it contains NUL bytes) — pass a CSV text file")
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise CorpusError(f"{path} is empty — pass a CSV file with one row per step")
    has_header = _is_header(rows[0], rows[1]) if len(rows) > 1 else not all(_is_number(c) for c in rows[0] if c.strip())
    header = [c.strip() for c in rows[0]] if has_header else [str(i + 1) for i in range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    names = [target or header[-1], *(covariates or [])]
    cols = []
    for name in names:
        if name not in header:
            what = "columns are " + ", ".join(repr(h) for h in header) if has_header else \
                f"it has no header, so name columns by number 1..{len(header)}"
            raise CorpusError(f"{path} has no column {name!r} ({what}) — {fix}")
        cols.append(header.index(name))
    if len(set(cols)) != len(cols):
        raise CorpusError(f"{path}: the target and covariates must be different columns (got {names})")
    values = np.empty((len(body), len(cols)), dtype=np.float64)
    for i, row in enumerate(body):
        line = i + 1 + has_header
        if len(row) != len(header):
            raise CorpusError(f"{path}:{line} has {len(row)} fields, the header {len(header)} — fix that row")
        for j, c in enumerate(cols):
            try:
                values[i, j] = float(row[c])
            except ValueError:
                raise CorpusError(f"{path}:{line} column {header[c]!r} is {row[c]!r}, not a number — fill or drop "
                                  "missing values first") from None
    if not np.isfinite(values).all():
        raise CorpusError(f"{path} holds NaN or infinite values — fill or drop them first")
    if np.abs(values).max(initial=0.0) > LARGEST:
        raise CorpusError(f"{path} holds values up to {np.abs(values).max():.3g}, past what the model computes in "
                          f"(float32, about {LARGEST:.0e} with room for scaling) — rescale the series first")
    if len(values) < 3:
        raise CorpusError(f"{path} holds {len(values)} rows — a series to forecast needs many more")
    return Series(path.stem, values, [header[c] for c in cols])


def _is_header(first: list[str], second: list[str]) -> bool:
    """A header names its columns: some field of the first row is not a number while the one below it is
    ("sales" over "112"), or has no digit while the one below has some ("date" over "1949-01"). A first row of a
    date and numbers ("2020-01-01,100.8") is data; so is a header that names every column with a number."""
    def digits(cell: str) -> bool:
        return any(ch.isdigit() for ch in cell)

    return any(not _is_number(a) and (_is_number(b) or not digits(a) and digits(b))
               for a, b in zip(first, second, strict=False))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# -- splits and windows --------------------------------------------------------------------------------------
def split_series(values: np.ndarray, test_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)``: the last ``test_size`` steps are held out, by position."""
    if not 0 < test_size < len(values):
        raise CorpusError(f"cannot hold out {test_size} of {len(values)} steps — pass 0 < --test-size < length")
    return values[:-test_size], values[-test_size:]


def windows(values: np.ndarray, lookback: int, horizon: int, ends: range | None = None) -> Examples:
    """Sliding windows: inputs ``values[e-H-L : e-H]`` (L, C) float32, targets ``values[e-H : e, 0]`` (H,) float32,
    one example per end ``e`` in ``ends`` (default: every window that fits). A window shorter than ``lookback``
    at the start of the series is kept with what there is (at least one step), so short series still train."""
    T = len(values)
    ends = ends if ends is not None else range(horizon + 1, T + 1)
    inputs, targets = [], []
    for e in ends:
        start = max(0, e - horizon - lookback)
        if e > T or e - horizon - start < 1:
            continue
        inputs.append(values[start:e - horizon].astype(np.float32).reshape(e - horizon - start, -1))
        targets.append(values[e - horizon:e, 0].astype(np.float32))
    return Examples(inputs, np.asarray(targets, dtype=np.float32).reshape(len(targets), horizon))


def train_val_windows(train: np.ndarray, lookback: int, horizon: int, val_size: int,
                      min_length: int = 1) -> tuple[Examples, Examples]:
    """Windows of the training part: validation windows are those whose targets end in the last ``val_size``
    steps; training windows' targets end before them, so no validation value is ever a training target.
    Windows shorter than ``min_length`` steps (e.g. the model's season) are skipped."""
    T = len(train)
    if not 0 < val_size < T - horizon:
        raise CorpusError(f"a validation tail of {val_size} steps does not fit a training part of {T} steps with "
                          f"horizon {horizon} — lower --val-size, --horizon or --test-size")
    first = horizon + max(1, min_length, lookback // 2)  # windows of at least half the lookback
    tr = windows(train, lookback, horizon, range(first, T - val_size + 1))
    va = windows(train, lookback, horizon, range(T - val_size + 1, T + 1))
    if len(tr) == 0:
        raise CorpusError(f"the training part ({T} steps) is too short for lookback {lookback}, horizon {horizon} "
                          f"and a validation tail of {val_size} — shorten them")
    return tr, va
