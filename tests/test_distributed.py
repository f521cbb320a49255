"""Data-parallel training: 2 gloo processes on the CPU against one process over the same global batch, rank 0 the
only writer, resume across process counts, and the splitting arithmetic.

The runs are real: torchrun's launcher starts the ranks (once through ``python -m torch.distributed.run`` with a
worker that notes each rank's writes, once through ``rnnkit train --nproc 2``), and the one-process reference is
the ordinary CLI. Every comparison is with that reference, never with stored numbers.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rnnkit.checkpoint import CONFIG, MODEL, TRAINER_STATE, load_tensors
from rnnkit.cli import main
from rnnkit.data import IGNORE_INDEX, build_vocab, encode_file, split_tokens
from rnnkit.errors import ConfigError
from rnnkit.metrics import MetricsLog
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.train import TrainConfig, Trainer
from rnnkit.train.distributed import Ranks
from rnnkit.train.tbptt import shard_loss

HERE = Path(__file__).resolve().parent
# --weight-drop 0: each rank draws its own DropConnect mask for its streams, as with dropout, so only a model with no
# randomness in training takes exactly the steps of one process. --cell lstm: the comparisons are at 1e-5, and the
# layer-normalised LSTM (the CPU default) carries the rounding of a 4-row against a 2-row matrix product into its
# state at ~3e-5 (measured: 3.4e-5 at steps 6, 9 and 12 alike, not growing)
FLAGS = ["--hidden-size", "16", "--num-layers", "2", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "16",
         "--eval-interval", "3", "--warmup-steps", "2", "--quiet", "--precision", "fp32", "--sample-length", "0",
         "--weight-drop", "0", "--cell", "lstm"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*argv):
    code = main([str(a) for a in argv])
    assert code == 0, argv


def launch(*argv, writes=None):
    """A subprocess; returns it after checking it succeeded."""
    env = {**ENV, "RNNKIT_WRITES": str(writes)} if writes else ENV
    result = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def snapshot(run_dir: Path, step: int) -> Path:
    return Path(shutil.copytree(run_dir, run_dir.with_name(f"{run_dir.name}-{step}")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process and two, side by side, each run as 6 steps, resumed to 9, resumed to 12.

    One process throughout: ``single-6``, ``single-9``, ``single-12``. The other: two processes (torchrun) for
    the first 6, one process to 9, two again (``--nproc 2``) to 12: ``ddp-6``, ``ddp-9``, ``ddp-12``.
    """
    import pydoc_data.topics

    root = tmp_path_factory.mktemp("ddp")
    topics = pydoc_data.topics.topics
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics))[:20_000], encoding="utf-8")
    writes = root / "writes"
    writes.mkdir()

    single, ddp = root / "single", root / "ddp"
    cli("train", "--data", corpus, "--out", single, "--max-steps", 6, *FLAGS)
    snapshot(single, 6)
    cli("train", "--resume", single, "--max-steps", 9, "--quiet", "--sample-length", 0)
    snapshot(single, 9)
    cli("train", "--resume", single, "--max-steps", 12, "--quiet", "--sample-length", 0)
    snapshot(single, 12)

    launch("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", 2, HERE / "ddp_worker.py",
           "train", "--data", corpus, "--out", ddp, "--max-steps", 6, *FLAGS, writes=writes)
    snapshot(ddp, 6)
    cli("train", "--resume", ddp, "--max-steps", 9, "--quiet", "--sample-length", 0)
    snapshot(ddp, 9)
    result = launch("-m", "rnnkit", "train", "--resume", ddp, "--max-steps", 12, "--nproc", 2, "--quiet",
                    "--sample-length", 0)
    snapshot(ddp, 12)
    return {"root": root, "writes": writes, "launcher_stderr": result.stderr}


def assert_same_run(a: Path, b: Path, atol=1e-5):
    """Weights, optimizer state and the carried hidden state agree (to float tolerance); so do step and position."""
    (ta, ma), (tb, mb) = load_tensors(a / TRAINER_STATE), load_tensors(b / TRAINER_STATE)
    assert set(ta) == set(tb)
    assert {k: ma[k] for k in ("step", "epoch", "window", "tokens_seen")} == \
        {k: mb[k] for k in ("step", "epoch", "window", "tokens_seen")}
    for name in sorted(ta):
        if name != "rng.torch":
            torch.testing.assert_close(ta[name].double(), tb[name].double(), atol=atol, rtol=1e-4, msg=name)
    wa, wb = load_tensors(a / MODEL)[0], load_tensors(b / MODEL)[0]
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=1e-4, msg=name)
    assert ma["last_val"] == pytest.approx(mb["last_val"], abs=1e-6)


def test_two_processes_train_as_one(runs):
    """6 steps on 2 ranks x 2 streams == 6 steps on 1 process x 4 streams: same weights, Adam moments, carried
    state, and the same losses in metrics.csv (gathered over the ranks)."""
    root = runs["root"]
    assert_same_run(root / "single-6", root / "ddp-6")
    one, two = MetricsLog(root / "single-6").rows(), MetricsLog(root / "ddp-6").rows()
    assert [r["step"] for r in two] == [r["step"] for r in one] == [3, 6]
    for a, b in zip(one, two, strict=True):
        assert b["tokens"] == a["tokens"]
        for column in ("loss", "grad_norm", "val_loss"):
            assert b[column] == pytest.approx(a[column], rel=1e-4), column
    # the weights moved from the initialisation both started from (the CLI seeds with --seed, default 1337)
    vocab, _ = build_vocab(root / "corpus.txt")
    torch.manual_seed(TrainConfig.seed)
    start = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), hidden_size=16, num_layers=2, embedding_size=8))
    trained = load_tensors(root / "ddp-6" / MODEL)[0]
    assert (trained["head.weight"] - start.head.weight).abs().max() > 1e-3


def test_only_rank_0_writes(runs):
    writes = runs["writes"]
    assert not (writes / "rank1.txt").exists()
    names = (writes / "rank0.txt").read_text().split()
    # config once; model and trainer_state at each of the two checkpoints (steps 3 and 6); one metrics row each
    assert names.count(CONFIG) == 1
    assert names.count(MODEL) == 2 and names.count(TRAINER_STATE) == 2
    assert names.count("metrics.csv") == 2
    steps = [r["step"] for r in MetricsLog(runs["root"] / "ddp-12").rows()]
    assert steps == sorted(set(steps)) and {3, 6, 9, 12} <= set(steps)  # each step once, through 2 -> 1 -> 2


def test_resume_across_world_sizes(runs):
    """2 processes -> 1 -> 2 (`--nproc 2`) continues exactly as one process that never changed."""
    root = runs["root"]
    assert_same_run(root / "single-9", root / "ddp-9")
    assert_same_run(root / "single-12", root / "ddp-12")
    assert "2 processes of 2" in runs["launcher_stderr"] and "resuming at step 9" in runs["launcher_stderr"]
    assert runs["launcher_stderr"].count("done: 12 steps") == 1  # rank 0 speaks, rank 1 does not


def test_the_layer_normalised_lstm_trains_under_ddp_as_one_process_does(runs, tmp_path):
    """The CPU's default cell, on its compiled kernels: 2 processes agree with one to 1e-4 (its state carries the
    rounding of a 2-row against a 4-row matrix product at ~3e-5, see FLAGS)."""
    corpus = runs["root"] / "corpus.txt"
    flags = [*FLAGS[:-2], "--cell", "lnlstm", "--max-steps", 6]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    cli("train", "--data", corpus, "--out", single, *flags)
    result = launch("-m", "rnnkit", "train", "--data", corpus, "--out", ddp, "--nproc", 2, *flags)
    assert "2 processes of 2" in result.stderr and "LNLSTM" in result.stderr
    assert_same_run(single, ddp, atol=1e-4)


def test_a_world_size_that_does_not_split_the_batch_is_refused(runs, capsys, tmp_path):
    run_dir = shutil.copytree(runs["root"] / "ddp-12", tmp_path / "run")
    before = (run_dir / TRAINER_STATE).read_bytes()
    code = main(["train", "--resume", str(run_dir), "--max-steps", "15", "--nproc", "3"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "cannot resume on 3 processes" in err and "(1, 2, 4)" in err
    assert (run_dir / TRAINER_STATE).read_bytes() == before
    code = main(["train", "--out", str(tmp_path / "new"), "--max-steps", "2", "--nproc", "3", *FLAGS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not split evenly over 3 processes" in err, err
    code = main(["train", "--out", str(tmp_path / "new"), "--max-steps", "2", "--nproc", "0", *FLAGS])
    assert code == 2 and "--nproc must be >= 1" in capsys.readouterr().err


def test_the_trainer_refuses_before_joining_any_collective(small_corpus, tmp_path):
    """Under plain torchrun the check is the trainer's: it raises before DDP is built, so no rank hangs."""
    vocab, _ = build_vocab(small_corpus)
    train, val = split_tokens(encode_file(small_corpus, vocab))
    model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), hidden_size=8, num_layers=1, embedding_size=4))
    config = TrainConfig(batch_size=4, seq_len=8, max_steps=2, device="cpu")
    with pytest.raises(ConfigError, match="does not split evenly over 3"):
        Trainer(model, train, val, config, tmp_path / "run", show_progress=False, ranks=Ranks(1, 3))


@pytest.mark.parametrize("n, size", [(4, 2), (64, 8), (16, 3), (2, 4), (7, 7)])
def test_rows_cover_the_batch_once_in_rank_order(n, size):
    slices = [Ranks(r, size).rows(n) for r in range(size)]
    covered = np.concatenate([np.arange(n)[s] for s in slices])
    assert covered.tolist() == list(range(n))
    lengths = [s.stop - s.start for s in slices]
    assert max(lengths) - min(lengths) <= 1


def test_shard_losses_add_up_to_the_batch_mean_on_ragged_windows():
    """The last window of an epoch is ragged (streams differ by one token): however the valid targets fall between
    ranks — one rank may hold none — the ranks' shares average to the one-process mean loss, and so do their
    gradients."""
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (4, 3))
    y[2:, :] = IGNORE_INDEX  # rank 1 of 2 holds rows 2-3: no valid targets at all
    y[0, 2] = IGNORE_INDEX
    n = int((y != IGNORE_INDEX).sum())
    whole = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
    (g_whole,) = torch.autograd.grad(whole, logits)
    shares = [shard_loss(logits[r * 2:(r + 1) * 2], y[r * 2:(r + 1) * 2], n, 2) for r in range(2)]
    assert torch.isfinite(shares[1]) and shares[1].item() == 0.0
    mean = sum(shares) / 2  # what DDP's gradient averaging amounts to
    torch.testing.assert_close(mean, whole)
    (g_mean,) = torch.autograd.grad(mean, logits)
    torch.testing.assert_close(g_mean, g_whole)
