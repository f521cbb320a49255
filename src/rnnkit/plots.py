"""Plots written as PNG files (matplotlib on the Agg backend: no display needed).

matplotlib is imported when the first plot is drawn, not when rnnkit is, so commands that draw nothing start fast.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from rnnkit.checkpoint import atomic_write


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG, atomically (a reader never sees half a file), and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)


def plot_losses(rows: list[dict], path: Path) -> Path:
    """Training and validation loss (nats/char, left axis; bits/char on the right) against step."""
    fig, ax = subplots(figsize=(8, 4.5), dpi=100)
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if train:
        ax.plot(*zip(*train, strict=True), label="train (window mean)", lw=1.2, alpha=0.8)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation", lw=1.6, ms=3)
        best = min(v for _, v in val)
        ax.axhline(best, color="gray", ls=":", lw=1)
        ax.set_title(f"best validation {best:.4f} nats/char ({best / math.log(2):.4f} bits/char)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    secondary = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
    secondary.set_ylabel("bits/char")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_confusion(matrix, classes: list[str], path: Path, title: str = "") -> Path:
    """A confusion matrix: rows are true classes, columns predicted; cells show counts, colour the row share."""
    import numpy as np

    m = np.asarray(matrix)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(classes)
    fig, ax = subplots(figsize=(max(5.0, 0.45 * n + 2.5), max(4.5, 0.45 * n + 2.0)), dpi=100)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_forecast(history, truth, forecasts: dict, path: Path, title: str = "") -> Path:
    """A held-out forecast: the training history, the true continuation, and each named forecast of it."""
    import numpy as np

    fig, ax = subplots(figsize=(9, 4.5), dpi=100)
    n, h = len(history), len(truth)
    ax.plot(np.arange(n), history, color="black", lw=1.2, label="history (training part)")
    future = np.arange(n, n + h)
    ax.plot(future, truth, color="black", lw=1.2, ls="--", label="truth (held out)")
    for name, values in forecasts.items():
        ax.plot(future, np.asarray(values)[:h], lw=1.6, label=name)
    ax.axvline(n - 0.5, color="gray", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
