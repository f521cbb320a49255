"""The trainer: TBPTT state handling, exact resume, divergence, schedule, budgets, and learning on real data."""

import math

import numpy as np
import pytest
import torch

from rnnkit.checkpoint import BEST, MODEL, TRAINER_STATE
from rnnkit.data import Streams, build_vocab, encode_file, split_tokens
from rnnkit.errors import ConfigError, CorpusError, TrainingDiverged
from rnnkit.metrics import MetricsLog
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.train import TrainConfig, Trainer, detach_state, evaluate, resolve_device


def tokens_of(path, n=None):
    vocab, _ = build_vocab(path)
    ids = encode_file(path, vocab)
    return vocab, (ids if n is None else ids[:n])


def make_model(vocab_size, cell="lstm", dropout=0.0, hidden=16, weight_drop=0.0):
    """Deterministic in training mode unless asked (no dropout, no weight drop), so runs can be compared exactly."""
    return LanguageModel(LanguageModelConfig(vocab_size=vocab_size, cell=cell, hidden_size=hidden, num_layers=2,
                                             embedding_size=8, dropout=dropout, weight_drop=weight_drop))


def make_trainer(model, ids, run_dir, **kw):
    cfg = dict(batch_size=4, seq_len=16, eval_interval=10, log_interval=5, warmup_steps=5, precision="fp32",
               device="cpu")
    cfg.update(kw)
    train, val = split_tokens(ids)
    return Trainer(model, train, val, TrainConfig(**cfg), run_dir, show_progress=False)


def test_detach_state_keeps_values_and_cuts_the_graph():
    h = torch.randn(2, 3, 4, requires_grad=True) * 2
    c = torch.randn(2, 3, 4, requires_grad=True) * 2
    for state in (h, (h, c)):
        cut = detach_state(state)
        parts = cut if isinstance(cut, tuple) else (cut,)
        orig = state if isinstance(state, tuple) else (state,)
        for a, b in zip(parts, orig, strict=True):
            assert a.grad_fn is None and not a.requires_grad
            assert torch.equal(a, b)
    assert detach_state(None) is None


def test_state_crosses_window_edges_but_gradients_do_not(small_corpus):
    vocab, ids = tokens_of(small_corpus)
    model = make_model(len(vocab)).double()
    streams = Streams(ids, 3, 12)
    (x0, _), (x1, y1) = streams.window(0), streams.window(1)
    # rows continue across the edge, so carrying the state equals running both windows as one sequence
    whole = model(torch.cat([x0, x1], 1))
    first = model(x0)
    second = model(x1, detach_state(first.state), y1)
    torch.testing.assert_close(second.logits, whole.logits[:, 12:])
    # ... but window 1's loss sends no gradient into window 0 (its final h), only into the weights
    h0 = first.state[0]
    grads = torch.autograd.grad(second.loss, [h0] + list(model.parameters()), allow_unused=True)
    assert grads[0] is None
    assert all(g is not None for g in grads[1:])
    # without the cut it would: the check above can fail
    uncut = model(x1, first.state, y1)
    assert torch.autograd.grad(uncut.loss, [h0])[0].abs().sum() > 0


def test_trainer_carries_state_between_steps(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 4000)
    torch.manual_seed(0)
    trainer = make_trainer(make_model(len(vocab)), ids, tmp_path / "run")
    trainer.optimizer.step = lambda *a, **k: None  # freeze weights so the state can be recomputed
    trainer.train_step()
    trainer.train_step()
    streams = Streams(trainer.train_tokens, 4, 16)
    x = torch.cat([streams.window(0)[0], streams.window(1)[0]], 1)
    with torch.no_grad():
        expected = trainer.model(x).state
    for got, want in zip(trainer.state, expected, strict=True):
        assert got.grad_fn is None
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("reg", ["activation_reg", "temporal_activation_reg"])
def test_activation_regularisation_is_trained_on_but_not_logged(small_corpus, tmp_path, reg):
    """A strong AR (TAR) makes the top layer's outputs (their step-to-step changes) far smaller than the same run
    without; the loss a step returns is the plain cross-entropy, the penalty left out."""
    vocab, ids = tokens_of(small_corpus, 4000)
    x = torch.as_tensor(ids[:200].astype(np.int64))[None]
    measure = {"activation_reg": lambda h: h.pow(2).mean(),
               "temporal_activation_reg": lambda h: (h[:, 1:] - h[:, :-1]).pow(2).mean()}[reg]
    sizes = {}
    for strength in (0.0, 3000.0):
        torch.manual_seed(0)
        off = {"activation_reg": 0.0, "temporal_activation_reg": 0.0}
        model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), hidden_size=16, num_layers=2,
                                                  embedding_size=8, weight_drop=0.0, **{**off, reg: strength}))
        trainer = make_trainer(model, ids, tmp_path / f"{reg}-{strength}", lr=1e-2)
        for _ in range(40):
            trainer.train_step()
        with torch.no_grad():
            sizes[strength] = float(measure(model.rnn(model.embedding(x))[0]))
        trainer.optimizer.step = lambda *a, **k: None  # frozen: the step's loss can be recomputed
        state = trainer.state
        loss, _, _ = trainer.train_step()
        xw, yw = Streams(trainer.train_tokens, 4, 16).window(40)
        with torch.no_grad():
            torch.testing.assert_close(loss, model.eval()(xw, state, yw).loss)
    assert sizes[3000.0] < 0.3 * sizes[0.0], sizes


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resume_is_exact(small_corpus, tmp_path, cell):
    """N steps + stop + resume N steps == 2N steps straight, bitwise on CPU (dropout on: RNG restored;
    an epoch boundary inside the run: data position restored; the carried state restored)."""
    vocab, ids = tokens_of(small_corpus, 2000)  # ~28 windows per epoch: 40 steps cross an epoch edge
    torch.manual_seed(0)
    straight = make_trainer(make_model(len(vocab), cell, dropout=0.2), ids, tmp_path / "a", max_steps=40)
    straight.fit()

    torch.manual_seed(0)
    first = make_trainer(make_model(len(vocab), cell, dropout=0.2), ids, tmp_path / "b", max_steps=40)
    first.fit(until_step=23)
    torch.manual_seed(123)  # a different initialisation and RNG: resume must overwrite both
    second = make_trainer(make_model(len(vocab), cell, dropout=0.2), ids, tmp_path / "b", max_steps=40)
    second.resume()
    assert second.step == 23 and second.epoch == 0
    second.fit()
    assert second.step == straight.step == 40 and second.epoch == straight.epoch == 1
    for (name, a), b in zip(straight.model.named_parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert (tmp_path / "b" / MODEL).exists() and (tmp_path / "b" / BEST).exists()
    # metrics.csv holds each step once, however the run was split
    steps = [int(r["step"]) for r in MetricsLog(tmp_path / "b").rows()]
    assert steps == sorted(set(steps))


@pytest.mark.parametrize("deferred", [False, True], ids=["checked-each-step", "deferred-as-on-a-gpu"])
def test_nan_stops_training_and_keeps_the_last_checkpoint(small_corpus, tmp_path, deferred):
    """On a GPU the checks are queued and read once per log interval (4 here, eval every 3): the error still names
    the first bad step, and no checkpoint after it is written."""
    vocab, ids = tokens_of(small_corpus, 4000)
    trainer = make_trainer(make_model(len(vocab)), ids, tmp_path / "run", max_steps=30, log_interval=4,
                           eval_interval=3)
    trainer.defer_checks = deferred
    trainer.fit(until_step=10)
    files = {n: (tmp_path / "run" / n).read_bytes() for n in (MODEL, BEST, TRAINER_STATE)}
    with torch.no_grad():
        trainer.model.head.bias[0] = float("nan")
    with pytest.raises(TrainingDiverged, match="the loss became nan at step 11;.*untouched"):
        trainer.fit()
    assert trainer.step == (12 if deferred else 10)  # deferred: steps 11 and 12 ran, the read at 12 caught it
    assert not trainer._unchecked
    for name, data in files.items():
        assert (tmp_path / "run" / name).read_bytes() == data, name


def test_gradient_norm_is_logged_and_clipped(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 4000)
    trainer = make_trainer(make_model(len(vocab), "rnn"), ids, tmp_path / "run", max_steps=5, grad_clip=1e-3,
                           log_interval=1, lr=1e-2)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step()
    norms = [p.grad.norm() ** 2 for p in trainer.model.parameters()]
    assert math.sqrt(sum(norms)) == pytest.approx(1e-3, rel=1e-3)  # gradients were scaled to the clip
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    trainer.fit()
    rows = MetricsLog(tmp_path / "run").rows()
    assert all(r["grad_norm"] > 1e-3 for r in rows if r["loss"] is not None)  # the norm before clipping


def test_schedule_warms_up_then_decays_to_the_floor(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 4000)
    trainer = make_trainer(make_model(len(vocab)), ids, tmp_path / "run", max_steps=100, warmup_steps=10,
                           lr=1e-2, min_lr_ratio=0.1)
    lrs = []
    for step in range(101):
        trainer.step = step
        lrs.append(trainer.lr())
    assert lrs[0] == pytest.approx(1e-3)  # 1/10 of the peak
    assert max(lrs) <= 1e-2 and lrs[9] == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.09))))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[100] == pytest.approx(1e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_validation_runs_at_the_training_precision(small_corpus, tmp_path, precision):
    vocab, ids = tokens_of(small_corpus)
    torch.manual_seed(0)
    trainer = make_trainer(make_model(len(vocab), hidden=64), ids, tmp_path / "run", precision=precision,
                           max_steps=3, eval_streams=4)
    logged = trainer.fit()["val_loss"]
    val = split_tokens(ids)[1]
    fp32 = evaluate(trainer.model, val, 4, torch.device("cpu"))  # what `rnnkit eval` reports
    with torch.autocast("cpu", torch.bfloat16):
        bf16 = evaluate(trainer.model, val, 4, torch.device("cpu"))
    assert fp32 != bf16 and abs(fp32 - bf16) < 0.01  # distinguishable, and close
    assert logged == (bf16 if precision == "bf16" else fp32)


def test_wall_budget_stops_training(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 4000)
    trainer = make_trainer(make_model(len(vocab)), ids, tmp_path / "run", minutes=0.01)
    summary = trainer.fit()
    assert summary["elapsed_s"] >= 0.6 and not summary["interrupted"]
    assert trainer.progress() >= 1.0 and (tmp_path / "run" / MODEL).exists()


def test_errors(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 300)
    with pytest.raises(CorpusError, match="shorter than one window"):
        make_trainer(make_model(len(vocab)), ids, tmp_path / "run", batch_size=64, max_steps=5)
    trainer = make_trainer(make_model(len(vocab)), tokens_of(small_corpus)[1], tmp_path / "run")
    with pytest.raises(ConfigError, match="budget"):
        trainer.fit()
    for bad in (dict(batch_size=0), dict(seq_len=-1), dict(lr=0), dict(max_steps=0), dict(minutes=-1),
                dict(precision="fp8"), dict(min_lr_ratio=2)):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            make_trainer(make_model(len(vocab)), ids, tmp_path / "run", device="cuda")


@pytest.mark.parametrize("gpus, processes, expected", [(0, "1", "cpu"), (1, "1", "cuda"), (1, "2", "cpu"),
                                                       (2, "2", "cuda")])
def test_auto_device_gives_each_process_a_gpu_or_takes_the_cpu(monkeypatch, gpus, processes, expected):
    """Two torchrun processes on a one-GPU machine train on the CPU instead of both claiming cuda:0 and cuda:1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    assert resolve_device("auto").type == expected


def test_batches_reach_the_device_unchanged():
    """``to_device``: the same values on the target device; on a GPU through pinned memory, the source tensor
    left as it was (pageable, on the CPU). Runs its GPU half only where there is a GPU."""
    from rnnkit.data.batching import to_device

    x = torch.arange(12, dtype=torch.int64).view(3, 4)
    here = to_device(x, "cpu")
    assert here.device.type == "cpu" and torch.equal(here, x)
    if torch.cuda.is_available():
        there = to_device(x, "cuda")
        assert there.device.type == "cuda" and torch.equal(there.cpu(), x) and not x.is_pinned()
        assert to_device(there, "cuda") is there


def test_learns_real_text(shakespeare, tmp_path):
    """200 steps on Tiny Shakespeare take validation loss far below the unigram model's (which knows only
    character frequencies): the model has learnt how characters follow each other."""
    vocab, ids = tokens_of(shakespeare)
    train, val = split_tokens(ids)
    counts = np.bincount(train, minlength=len(vocab)) + 1
    unigram = float(-(np.log(counts / counts.sum())[val[1:]]).mean())
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), hidden_size=128, num_layers=1,
                                              embedding_size=32))
    trainer = make_trainer(model, ids, tmp_path / "run", batch_size=32, seq_len=64, max_steps=200, lr=1e-2,
                           eval_interval=100, eval_streams=64)
    start = evaluate(model, val, 64, torch.device("cpu"))
    summary = trainer.fit()
    assert start > math.log(len(vocab)) - 0.2  # untrained: about uniform
    assert summary["val_loss"] < unigram - 0.7, (summary["val_loss"], unigram)
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_every_trained_step_is_in_one_logged_row_across_ctrl_c_and_resume(small_corpus, tmp_path):
    """A row's loss is the mean of the steps since the previous row: Ctrl-C and the end of the budget log the
    steps since the last row, so no step is left out and a resumed run's first row covers only its own steps."""
    vocab, ids = tokens_of(small_corpus, 4000)
    run = tmp_path / "run"
    losses = {}

    def recording(trainer, stop_after=None):
        inner = trainer.train_step

        def step():
            loss, norm, n = inner()
            losses[trainer.step] = float(loss)
            if trainer.step == stop_after:
                trainer._stop = True  # what the SIGINT handler sets
            return loss, norm, n
        trainer.train_step = step
        return trainer

    first = recording(make_trainer(make_model(len(vocab)), ids, run, max_steps=23), stop_after=13)
    assert first.fit()["interrupted"] and first.step == 13
    second = recording(make_trainer(make_model(len(vocab)), ids, run, max_steps=23))
    second.resume()
    assert not second.fit()["interrupted"] and second.step == 23
    every = MetricsLog(run).rows()
    rows = [r for r in every if r["loss"] is not None]
    assert [int(r["step"]) for r in rows] == [5, 10, 13, 15, 20, 23] == [int(r["step"]) for r in every]
    assert rows[-1]["val_loss"] is not None  # the last row holds the last interval and the final validation
    elapsed = [r["elapsed_s"] for r in every]
    assert elapsed == sorted(elapsed)  # a resume starts from the time the checkpoint recorded, validation included
    third = recording(make_trainer(make_model(len(vocab)), ids, run, max_steps=30), stop_after=30)
    third.resume()  # Ctrl-C during the budget's last step: the step is validated and kept, and the run is done
    summary = third.fit()
    assert not summary["interrupted"] and summary["step"] == 30 and summary["steps_run"] == 7
    assert MetricsLog(run).rows()[-1]["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    edges = [0, 5, 10, 13, 15, 20, 23]
    for row, lo, hi in zip(rows, edges[:-1], edges[1:], strict=True):
        want = np.mean([losses[s] for s in range(lo + 1, hi + 1)])
        assert row["loss"] == pytest.approx(want, rel=1e-5), row  # metrics.csv keeps 6 digits


def test_a_budget_that_ends_on_a_logging_step_logs_it_once(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 4000)
    trainer = make_trainer(make_model(len(vocab)), ids, tmp_path / "run", max_steps=15)  # log 5, validate 10
    summary = trainer.fit()
    rows = MetricsLog(tmp_path / "run").rows()
    assert [int(r["step"]) for r in rows] == [5, 10, 15]
    assert all(r["loss"] is not None for r in rows) and [r["val_loss"] is not None for r in rows] == [False, True, True]
    assert rows[-1]["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    again = make_trainer(make_model(len(vocab)), ids, tmp_path / "run", max_steps=15)
    again.resume()
    assert again.fit()["step"] == 15  # the budget was spent: nothing trains, and no row is added
    assert len(MetricsLog(tmp_path / "run").rows()) == 3
