"""What every rnnkit trainer shares: the budget, AdamW with warm-up + cosine decay, clipping, divergence checks,
validation and checkpoints every ``eval_interval`` steps, metrics.csv, a progress bar, Ctrl-C that saves, and a
resume that restores everything.

A trainer subclasses ``LoopTrainer`` and supplies the data side: ``train_step`` (one update, through
``optimize``), ``validate`` (lower is better for the first figure), and what its data position is in a
checkpoint (``position`` / ``restore_position``).

Data-parallel runs (``rnnkit.train.distributed``) pass ``ranks``: ``train_step`` then runs its training forward
through ``self.train_model`` (DDP's wrapper; the model itself in one process) on this rank's rows.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from rnnkit.checkpoint import (
    BEST,
    CONFIG,
    MODEL,
    TRAINER_STATE,
    load_model_tensors,
    load_optimizer,
    load_tensors,
    model_tensors,
    optimizer_tensors,
    save_tensors,
    write_json,
)
from rnnkit.errors import CheckpointError, ConfigError, RnnkitError, TrainingDiverged
from rnnkit.metrics import MetricsLog
from rnnkit.train.averaging import WeightAverage
from rnnkit.train.config import LoopConfig, build_optimizer
from rnnkit.train.device import resolve_device
from rnnkit.train.distributed import SINGLE, NoMetrics, Ranks


class LoopTrainer(ABC):
    """The training loop and its checkpoints; subclasses supply the data (see the module docstring)."""

    #: figures ``validate`` returns besides ``val_loss``; they become metrics.csv columns
    extra_metrics: tuple[str, ...] = ()
    #: False for a run without validation data: ``validate`` is never called and every checkpoint is also the best
    #: (the final weights are what such a run keeps)
    validates: bool = True

    def __init__(self, model: nn.Module, config: LoopConfig, run_dir: str | Path, show_progress: bool = True,
                 ranks: Ranks = SINGLE) -> None:
        self.config, self.run_dir, self.show_progress, self.ranks = config, Path(run_dir), show_progress, ranks
        self.device = ranks.place(resolve_device(config.device))
        self.model = model.to(self.device)
        self.train_model = ranks.wrap(self.model)  # what train_step calls: DDP's wrapper in a data-parallel run
        self.optimizer = build_optimizer(self.model, config)
        self.average = WeightAverage(self.model, config.ema) if config.ema else None
        self.metrics = MetricsLog(self.run_dir, extra=self.extra_metrics) if ranks.is_main else NoMetrics()
        # training position: everything here is saved in trainer_state and restored by resume()
        self.step = self.tokens_seen = 0
        self.elapsed = 0.0
        self.best_val = math.inf  # val_loss of the best checkpoint
        self.best_key: list[float] | None = None  # selection_key of the best checkpoint
        self.last_val: float | None = None
        self.last_figures: dict = {}
        # a resumed run's config.json with its new settings, written with the first checkpoint (``save``): a resume
        # that fails before one (a divergence, a bad flag) leaves the run's files as they were
        self.pending_config: dict | None = None
        self._stop = False
        # a GPU queues (step, loss, norm) and reads them once per log interval (see ``optimize``)
        self.defer_checks = self.device.type == "cuda"
        self._unchecked: list[tuple[int, Tensor | None, Tensor]] = []

    # -- what a task trainer supplies ------------------------------------------------------------------------
    @abstractmethod
    def train_step(self) -> tuple[Tensor, Tensor, int]:
        """One update: forward, ``self.optimize(loss)``. Returns (loss, gradient norm, tokens in the batch).

        Loss and norm stay tensors (a float would make the CPU wait for the GPU at every step); tokens is counted
        on the CPU."""

    @abstractmethod
    def validate(self) -> dict:
        """``{"val_loss": ..., **extra_metrics}`` on the validation data (``selection_key`` picks the best)."""

    def selection_key(self, figures: dict) -> tuple[float, ...]:
        """What picks best.safetensors among validations, compared as a tuple, lower is better: the loss here."""
        return (figures["val_loss"],)

    @abstractmethod
    def position(self) -> tuple[dict, dict[str, Tensor]]:
        """Where in the data training is: JSON-able metadata and tensors, saved in trainer_state."""

    @abstractmethod
    def restore_position(self, meta: dict, tensors: dict[str, Tensor]) -> None:
        """Undo ``position``: called by ``resume`` after the model, optimizer and RNG are restored."""

    # -- schedule --------------------------------------------------------------------------------------------
    def progress(self) -> float:
        """Fraction of the budget used: steps or wall time, whichever is further along."""
        c = self.config
        p = self.step / c.max_steps if c.max_steps else 0.0
        if c.minutes:
            p = max(p, self.elapsed / (60.0 * c.minutes))
        return p

    def lr(self) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` over the budget."""
        c = self.config
        warm = min(1.0, (self.step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        p = min(1.0, self.progress())
        return c.lr * warm * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    # -- one update ------------------------------------------------------------------------------------------
    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.config.precision == "bf16")

    def optimize(self, loss: Tensor) -> Tensor:
        """Backward, clip, AdamW at the scheduled learning rate; counts the step. Returns the gradient norm.

        A loss or gradient norm that is not finite raises ``TrainingDiverged``. On the CPU that is checked before
        the update, so the weights in memory stay good. On a GPU each check would wait for the GPU to finish the
        step, so the values are queued and read together once per log interval (``check_finite``), always before
        a checkpoint is written: the bad update may reach the weights in memory, never a checkpoint on disk.
        """
        deferred = self.defer_checks
        if not deferred and self.ranks.size == 1 and not torch.isfinite(loss):  # ranks: the all-reduced norm
            raise self._diverged(f"the loss became {loss.item()}", self.step + 1)  # below is what all share
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if deferred:
            self._unchecked.append((self.step + 1, loss.detach() if self.ranks.size == 1 else None, norm))
        elif not torch.isfinite(norm):
            raise self._diverged(f"the gradient norm became {norm.item()}", self.step + 1)
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model)
        self.step += 1
        return norm

    def averaged_weights(self) -> AbstractContextManager:
        """The model with the weights it publishes: the moving average with ``--ema``, its own otherwise."""
        return self.average.swapped_into(self.model) if self.average is not None else nullcontext()

    def check_finite(self) -> None:
        """Read the queued losses and gradient norms (one wait for the GPU); raise for the first that is not finite."""
        if not self._unchecked:
            return
        queued, self._unchecked = self._unchecked, []
        values = torch.stack([torch.stack([loss if loss is not None else norm, norm]).float()
                              for _, loss, norm in queued])
        finite = torch.isfinite(values).tolist()
        for (step, loss, norm), (loss_ok, norm_ok) in zip(queued, finite, strict=True):
            if not loss_ok:
                raise self._diverged(f"the loss became {loss.item()}", step)
            if not norm_ok:
                raise self._diverged(f"the gradient norm became {norm.item()}", step)

    def _diverged(self, what: str, step: int) -> TrainingDiverged:
        if (self.run_dir / TRAINER_STATE).exists():
            return TrainingDiverged(f"{what} at step {step}; the last good checkpoint in {self.run_dir} is untouched "
                                    "— lower --lr or --grad-clip and resume or train again")
        return TrainingDiverged(f"{what} at step {step}; no checkpoint had been written yet — lower --lr or "
                                "--grad-clip and train again")

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self, until_step: int | None = None) -> dict:
        """Train until the budget (``max_steps`` / ``minutes``) or ``until_step`` is reached, or Ctrl-C.

        Validates and checkpoints every ``eval_interval`` steps and at the end. Returns a summary dict.
        """
        c = self.config
        if not c.max_steps and not c.minutes:
            raise ConfigError("give a budget: --max-steps N or --minutes M")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics.truncate(self.step)  # rows past the checkpoint we start from belong to a run that was lost
        restore = self._install_sigint()
        bar = self._progress_bar()
        interval_loss, interval_n, interval_tokens, interval_time = 0.0, 0, 0, 0.0
        norm, stopping, ran, first_step = 0.0, self._stop, False, self.step
        try:
            while self.progress() < 1.0 and not stopping and (until_step is None or self.step < until_step):
                t0 = time.perf_counter()
                loss, norm, n = self.train_step()
                if self.step % c.log_interval == 0:
                    self.check_finite()  # on a GPU, the wait for the queued steps falls in this step's time
                dt = time.perf_counter() - t0
                loss, n, dt, stopping = self.ranks.agree(loss, n, dt, self._stop)  # one process: as they are
                self.tokens_seen += n
                interval_loss, interval_n = interval_loss + loss, interval_n + 1
                interval_tokens, interval_time = interval_tokens + n, interval_time + dt
                self.elapsed += dt
                ran = True
                last = self.progress() >= 1.0 or (until_step is not None and self.step >= until_step)
                figures = {}
                if self.step % c.eval_interval == 0 or last:  # the last step's row holds its interval and figures
                    figures = self._validate_and_save()
                if self.step % c.log_interval == 0 or figures or last:
                    tps = interval_tokens / max(interval_time, 1e-9)
                    norm, interval_loss = float(norm), float(interval_loss)
                    self.metrics.log(
                        step=self.step, tokens=self.tokens_seen, elapsed_s=round(self.elapsed, 3), lr=self.lr(),
                        loss=interval_loss / interval_n, grad_norm=norm, tokens_per_s=round(tps, 1), **figures,
                    )
                    if bar is not None:
                        bar.set_postfix(loss=f"{interval_loss / interval_n:.3f}", val=self._fmt_val(),
                                        tok_s=f"{tps:,.0f}", refresh=False)
                    interval_loss, interval_n, interval_tokens, interval_time = 0.0, 0, 0, 0.0
                if bar is not None:
                    bar.update(min(self._bar_position(), bar.total) - bar.n)
            # Ctrl-C during the budget's last step: that step was validated and saved as the last; the run is done
            interrupted = stopping and not (ran and last)
            if interrupted:
                self.check_finite()
                if interval_n:  # the steps since the last row (a resumed run's first row covers only its own)
                    self.metrics.log(step=self.step, tokens=self.tokens_seen, elapsed_s=round(self.elapsed, 3),
                                     lr=self.lr(), loss=float(interval_loss) / interval_n, grad_norm=float(norm),
                                     tokens_per_s=round(interval_tokens / max(interval_time, 1e-9), 1))
                self.save()
            elif not ran and self.step % c.eval_interval != 0:
                # nothing left to train (a resume of a spent budget): the figures of where it stands, for the
                # summary; metrics.csv has this step's row already, unless Ctrl-C came at the very last step
                self._validate_and_save()
        finally:
            if bar is not None:
                bar.close()
            restore()
        self.metrics.plot()
        return {
            "step": self.step, "tokens": self.tokens_seen, "elapsed_s": self.elapsed, "val_loss": self.last_val,
            "best_val_loss": self.best_val, "interrupted": interrupted, "steps_run": self.step - first_step,
            **self.last_figures,
        }

    def _fmt_val(self) -> str:
        return "-" if self.last_val is None else f"{self.last_val:.3f}"

    def _progress_bar(self) -> tqdm | None:
        if not self.show_progress or not self.ranks.is_main:
            return None
        c = self.config
        if c.minutes:
            total, unit = 60.0 * c.minutes, "s"
        else:
            total, unit = c.max_steps, "step"
        bar = tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr, mininterval=0.5, miniters=0,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}{postfix}]",
                   disable=None)
        bar.update(self._bar_position())  # a resumed run starts part-way
        return bar

    def _bar_position(self) -> float:
        return self.elapsed if self.config.minutes else self.step

    def _install_sigint(self):
        """Ctrl-C finishes the current step, saves the last checkpoint and returns."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            if self._stop:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self._stop = True
            tqdm.write("interrupted: saving the last checkpoint (Ctrl-C again to abort)", file=sys.stderr)

        previous = signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)

    def _validate_and_save(self) -> dict:
        self.check_finite()  # a step that diverged never reaches a checkpoint
        if not self.validates:
            self.save(best=True)
            return {}
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self.averaged_weights(), self.autocast():  # the precision training runs at
            figures = self.validate()
        self.model.train(was_training)
        val = figures["val_loss"]
        self.last_val, self.last_figures = val, figures
        key = list(self.selection_key(figures))
        improved = self.best_key is None or key < self.best_key
        if improved:
            self.best_val, self.best_key = val, key
        # the validation's time counts before the checkpoint records it: a resume then starts where metrics.csv is
        self.elapsed = self.ranks.from_main(self.elapsed + time.perf_counter() - t0)
        self.save(best=improved)
        return figures

    # -- checkpoints -----------------------------------------------------------------------------------------
    def save(self, best: bool = False) -> None:
        """Write model.safetensors (and best.safetensors), then trainer_state.safetensors.

        trainer_state holds its own copy of the weights, so resuming reads one file written in one atomic step.
        """
        position, position_tensors = self.position()  # first: in a data-parallel run every rank gathers it
        if not self.ranks.is_main:
            return
        if self.pending_config is not None:
            write_json(self.run_dir / CONFIG, self.pending_config)
            self.pending_config = None
        with self.averaged_weights():  # what model/best.safetensors publish; trainer_state keeps the live weights
            weights = model_tensors(self.model)
            if self.average is not None:
                weights = {k: v.clone() for k, v in weights.items()}
        meta = {"step": self.step, "val_loss": self.last_val, **{k: v for k, v in self.last_figures.items()
                                                                 if k != "val_loss"}}
        save_tensors(self.run_dir / MODEL, weights, meta)
        if best:
            save_tensors(self.run_dir / BEST, weights, meta)
        optim, param_groups = optimizer_tensors(self.optimizer)
        tensors = {**{f"model.{k}": v for k, v in model_tensors(self.model).items()}, **optim, **position_tensors}
        if self.average is not None:
            tensors.update(self.average.state())
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        save_tensors(self.run_dir / TRAINER_STATE, tensors, {
            "step": self.step, "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed,
            "best_val": None if math.isinf(self.best_val) else self.best_val, "best_key": self.best_key,
            "last_val": self.last_val,
            "last_figures": self.last_figures, "param_groups": param_groups, **position,
        })

    def resume(self) -> None:
        """Restore everything ``save`` wrote, so training continues exactly where it stopped."""
        path = self.run_dir / TRAINER_STATE
        if not path.exists():
            raise CheckpointError(f"{self.run_dir} has no {TRAINER_STATE} to resume from (the optimizer and the data "
                                  "position) — start a new run with another --out")
        tensors, meta = load_tensors(path)
        try:
            load_model_tensors(self.model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
            load_optimizer(self.optimizer, tensors, meta["param_groups"])
            if self.average is not None:  # a run that had none (--ema added on resume) averages from here on
                self.average.load_state(tensors)
            torch.set_rng_state(tensors["rng.torch"])
            if "rng.cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
            self.ranks.spread_rng()
            self.step, self.tokens_seen, self.elapsed = meta["step"], meta["tokens_seen"], meta["elapsed_s"]
            self.best_val = math.inf if meta["best_val"] is None else meta["best_val"]
            self.best_key = meta.get("best_key", None if meta["best_val"] is None else [meta["best_val"]])
            self.last_val, self.last_figures = meta["last_val"], meta.get("last_figures") or {}
            self.restore_position(meta, tensors)
        except RnnkitError:
            raise  # a flag that does not fit the run (--batch-size): the checkpoint is fine
        except (KeyError, ValueError, IndexError, RuntimeError) as e:
            raise CheckpointError(f"{path} is incomplete ({e}) — the checkpoint is damaged") from None
