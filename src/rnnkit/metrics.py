"""metrics.csv in the run directory: one row per log interval, appended as training goes."""

from __future__ import annotations

import csv
from pathlib import Path

from rnnkit.checkpoint import atomic_write

COLUMNS = ("step", "tokens", "elapsed_s", "lr", "loss", "grad_norm", "val_loss", "tokens_per_s")
FILENAME = "metrics.csv"


class MetricsLog:
    def __init__(self, run_dir: Path, extra: tuple[str, ...] = ()) -> None:
        """``extra``: columns a task logs besides the common ones (e.g. ``val_accuracy``)."""
        self.path = Path(run_dir) / FILENAME
        self.columns = COLUMNS + tuple(extra)

    def log(self, **row) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.columns)
            writer.writerow(["" if row.get(c) is None else _fmt(row[c]) for c in self.columns])

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return [{k: (float(v) if v != "" else None) for k, v in r.items()} for r in csv.DictReader(f)]

    def truncate(self, step: int) -> None:
        """Drop rows logged after ``step`` (training that ran past the checkpoint being resumed)."""
        if not self.path.exists():
            return
        if step == 0:  # a fresh run: nothing before it is ours
            self.path.unlink()
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",", 1)[0]) <= step]  # column 0: step
        if len(kept) != len(lines):
            atomic_write(self.path, "".join(kept).encode("utf-8"))

    def plot(self) -> Path | None:
        from rnnkit.plots import plot_losses

        rows = self.rows()
        return plot_losses(rows, self.path.with_name("loss.png")) if rows else None


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)
