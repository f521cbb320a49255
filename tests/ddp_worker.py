"""One rank of a torchrun job running ``rnnkit`` (test_distributed), noting every checkpoint, config and metrics
write this rank makes in ``$RNNKIT_WRITES/rank<RANK>.txt``.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py train ...
"""

import os
import sys
from pathlib import Path

import torch

import rnnkit.checkpoint
import rnnkit.metrics
import rnnkit.train.loop
from rnnkit.cli import main

LOG = Path(os.environ["RNNKIT_WRITES"]) / f"rank{os.environ['RANK']}.txt"


def noting(fn, name=None):
    def wrapper(*args, **kwargs):
        with open(LOG, "a", encoding="utf-8") as f:
            f.write((name or Path(args[0]).name) + "\n")
        return fn(*args, **kwargs)
    return wrapper


torch.set_num_threads(1)
rnnkit.train.loop.save_tensors = noting(rnnkit.train.loop.save_tensors)
rnnkit.checkpoint.write_json = noting(rnnkit.checkpoint.write_json)
rnnkit.metrics.MetricsLog.log = noting(rnnkit.metrics.MetricsLog.log, "metrics.csv")
sys.exit(main(sys.argv[1:]))
