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


def plot_piano_roll(notes, path: Path, title: str = "") -> Path:
    """A melody as a piano roll: time in quarter notes on x, pitch on y (black keys shaded), one bar per note.

    ``notes`` are music tokens (``rnnkit.data.music``: bar lines are drawn dashed and fermatas marked; invalid tokens
    are skipped as ``melody_to_stream`` skips them), or ``(offset, duration, midi)`` triples, or objects with those
    attributes. Rests leave a gap.
    """
    from rnnkit.data.music import parse_tokens, pitch_token

    bars: list = []
    if notes and all(isinstance(t, str) for t in notes):
        parsed = parse_tokens(list(notes))
        bars = parsed.bars
        rows = [(float(n.offset), float(n.duration), n.midi, n.fermata) for n in parsed.notes if n.midi is not None]
    else:
        rows = [(float(o), float(d), int(m), False) for o, d, m in
                ((getattr(n, "offset", None), getattr(n, "duration", None), getattr(n, "midi", None))
                 if hasattr(n, "midi") else tuple(n) for n in notes) if m is not None]
    end = max([o + d for o, d, _, _ in rows] + [float(b) for b in bars] + [4.0])
    fig, ax = subplots(figsize=(min(20.0, max(6.0, 0.22 * end + 2)), 4.5), dpi=100)
    low, high = (min(r[2] for r in rows) - 2, max(r[2] for r in rows) + 2) if rows else (58, 74)
    for m in range(low, high + 1):
        if m % 12 in (1, 3, 6, 8, 10):
            ax.axhspan(m - 0.5, m + 0.5, color="0.93", lw=0)
    if rows:
        ax.barh([r[2] for r in rows], [r[1] for r in rows], left=[r[0] for r in rows], height=0.8,
                color="tab:blue", edgecolor="black", lw=0.6)
        marks = [(o + d / 2, m + 1.0) for o, d, m, f in rows if f]
        if marks:
            ax.plot(*zip(*marks, strict=True), ls="none", marker=r"$\frown$", ms=10, color="black", label="fermata")
            ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(end / 2, (low + high) / 2, "no notes", ha="center", va="center", color="gray")
    for b in bars:
        ax.axvline(float(b), color="gray", ls="--", lw=0.8)
    ax.set_xlim(0, end)
    ax.set_ylim(low - 0.5, high + 0.5)
    ticks = [m for m in range(low, high + 1) if m % 12 in (0, 4, 7, 9)]  # C, E, G, A: the tonic triads of C and a
    ax.set_yticks(ticks, [pitch_token(m) for m in ticks], fontsize=8)
    ax.set_xlabel("time (quarter notes)")
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_captions(images, captions: list[str], truths: list[str], path: Path, title: str = "",
                  columns: int = 10) -> Path:
    """A grid of small grey images ``(N, H, W)`` with the caption generated for each under it; a wrong caption is
    red with the truth beside it."""
    n = len(images)
    rows = max(1, math.ceil(n / columns))
    fig, axes = subplots(rows, columns, figsize=(columns * 1.1, rows * 1.35), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k], cmap="gray_r", interpolation="nearest")
        right = captions[k] == truths[k]
        ax.set_title(captions[k] if right else f"{captions[k]}\n({truths[k]})", fontsize=8,
                     color="black" if right else "red")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_attention(weights, source: list[str], output: list[str], path: Path, title: str = "") -> Path:
    """An attention matrix ``(len(output), len(source))``: one row per generated token, how much it read each
    source token."""
    rows, cols = len(output), len(source)
    fig, ax = subplots(figsize=(max(4.0, 0.55 * cols + 2), max(3.0, 0.45 * rows + 1.5)), dpi=100)
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), source, rotation=45, ha="right")
    ax.set_yticks(range(rows), output)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
