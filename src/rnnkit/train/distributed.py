"""Data-parallel training: one process per core group or GPU, launched by torchrun, gradients all-reduced by DDP.

``torchrun --nproc_per_node N -m rnnkit train ...`` (or ``rnnkit train --nproc N``, which runs torchrun's own
launcher) starts N copies of the training command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. ``setup``
joins the process group they describe (gloo on CPU, NCCL on CUDA, one GPU per rank) and returns this process's
``Ranks``; one process gets ``SINGLE``, and every method below is then the identity, so a one-process run is the
run it always was.

The split: the global batch of B rows is cut into N contiguous slices, rank r taking rows ``rows(B)``, so N ranks
of B/N rows compute the update one process of B rows would. DDP averages the gradients in backward, before the
clip, so every rank clips the same all-reduced gradient and takes the same step. Rank 0 alone writes checkpoints,
metrics and progress; anything that decides whether the loop goes on (the wall clock, Ctrl-C) is agreed on every
step, so no rank waits in a collective that the others have left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rnnkit.errors import ConfigError


def world_size() -> int:
    """How many processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_split(batch_size: int, size: int, resuming: bool = False) -> None:
    """Refuse a global batch that ``size`` processes cannot share evenly."""
    if batch_size % size == 0:
        return
    fits = ", ".join(str(n) for n in range(1, batch_size + 1) if batch_size % n == 0)
    if resuming:
        raise ConfigError(f"cannot resume on {size} processes: the run's global batch of {batch_size} streams does "
                          f"not split evenly — resume with a process count that divides it ({fits})")
    raise ConfigError(f"a global batch of {batch_size} streams does not split evenly over {size} processes — use "
                      f"a process count that divides it ({fits}) or another --batch-size")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job: its rank, how many ranks there are, and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, metrics and progress."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows, in rank order (sizes differ by at most one)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def place(self, device: torch.device) -> torch.device:
        """One GPU per rank: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        return torch.device("cuda", self.local_rank) if self.size > 1 and device.type == "cuda" else device

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module a trainer runs its training forward through: DDP's wrapper in a job, else ``model``.

        DDP broadcasts rank 0's weights on construction, so every rank starts equal; then each rank but 0 draws
        its own random stream, so dropout masks differ between the ranks' rows as they do between one process's.
        """
        if self.size == 1:
            return model
        ids = [self.local_rank] if self.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.spread_rng()
        return wrapped

    def spread_rng(self) -> None:
        """Ranks other than 0 move to a random stream of their own (derived from the shared one and the rank)."""
        if self.rank:
            torch.manual_seed(int(torch.randint(2**62, ())) + self.rank)

    # -- collectives (identity in one process) ----------------------------------------------------------------
    def agree(self, loss: float, tokens: int, seconds: float, stop: bool) -> tuple[float, int, float, bool]:
        """After a step: the mean of the ranks' losses, their total tokens, rank 0's clock, and stop if any rank
        was asked to (Ctrl-C). One all-reduce of four numbers."""
        if self.size == 1:
            return loss, tokens, seconds, stop
        t = torch.tensor([float(loss) / self.size, tokens, seconds if self.is_main else 0.0, float(stop)],
                         dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        loss, tokens, seconds, stop = t.tolist()
        return loss, round(tokens), seconds, stop > 0

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, 0)
        return t.item()

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return tuple(t.tolist())

    def gather_rows(self, t: Tensor, dim: int = 1) -> Tensor:
        """Every rank's rows of ``t`` (along ``dim``), concatenated in rank order: the whole batch."""
        if self.size == 1:
            return t
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t)
        return torch.cat(parts, dim)

    def close(self) -> None:
        """Leave the process group together: wait for every rank, then tear it down. (A rank that exits while its
        peers still hold the group open can abort in gloo's teardown.)"""
        if self.size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


SINGLE = Ranks()


def setup(device: torch.device) -> Ranks:
    """Join the process group torchrun describes in the environment (``env://``); ``SINGLE`` outside one.

    gloo for CPU training, NCCL for CUDA. ``Ranks.close`` leaves it when training is over.
    """
    size = world_size()
    if size == 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"rank {rank} wants cuda:{local_rank} but this machine has "
                              f"{torch.cuda.device_count()} GPUs — start at most one process per GPU")
        torch.cuda.set_device(local_rank)
        backend, comm = "nccl", torch.device("cuda", local_rank)
    else:
        backend, comm = "gloo", torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Ranks(rank, size, local_rank, comm)


class NoMetrics:
    """Stands in for MetricsLog on ranks other than 0: they write nothing."""

    def log(self, **row) -> None:
        pass

    def truncate(self, step: int) -> None:
        pass

    def rows(self) -> list[dict]:
        return []

    def plot(self) -> None:
        return None


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m rnnkit ARGV`` in ``nproc`` processes on this machine through torchrun's launcher
    (``torch.distributed.run``, standalone rendezvous) and return the exit status; only rank 0's output shows.

    Each process gets ``OMP_NUM_THREADS`` = cores / nproc unless it is set, so the ranks do not oversubscribe.
    """
    import logging

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in list(logging.root.manager.loggerDict):  # the launcher's own chatter; each logger sets its level
        if name.startswith(("torch.distributed.run", "torch.distributed.elastic")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = torchrun.get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--local-ranks-filter=0", "--module", "rnnkit", *argv])
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = threads or str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        torchrun.run(args)
    except ChildFailedError as e:  # the failing rank has said why (rank 0 on its stderr)
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 1
    except SignalException:
        return 130
    finally:
        if threads is None:
            del os.environ["OMP_NUM_THREADS"]
    return 0
