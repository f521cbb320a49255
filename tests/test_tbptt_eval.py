"""The TBPTT validation loss (``evaluate`` / ``loss_sums``) against one forward pass per stream, and the trainer's
epochs: a seeded offset per epoch, and streams that start again from the zero state."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.data import Streams
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.train import TrainConfig, Trainer, evaluate
from rnnkit.train.tbptt import loss_sums

V = 11


def make_model(cell="lstm", seed=0):
    torch.manual_seed(seed)
    model = LanguageModel(LanguageModelConfig(vocab_size=V, cell=cell, hidden_size=12, num_layers=2,
                                              embedding_size=6, dropout=0.0, weight_drop=0.0))
    with torch.no_grad():  # larger weights than the default init, so the state carries a lot
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.double()


def tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=n).astype(np.int64)


@torch.no_grad()
def by_hand(model, toks, streams):
    """Mean cross-entropy over every target, each of ``streams`` contiguous streams (lengths differing by at most
    one, the longer ones first) read in one forward pass from the zero state."""
    n_targets = len(toks) - 1
    base, extra = divmod(n_targets, streams)
    total, start = 0.0, 0
    for b in range(streams):
        length = base + (b < extra)
        x = torch.as_tensor(toks[start : start + length])[None]
        y = torch.as_tensor(toks[start + 1 : start + length + 1])
        total += F.cross_entropy(model.eval()(x).logits[0], y, reduction="sum").item()
        start += length
    assert start == n_targets
    return total / n_targets


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("n, streams", [(41, 1), (23, 3), (40, 3), (23, 5)])
def test_evaluate_is_one_pass_per_stream_whatever_the_window(cell, n, streams):
    """The state is carried from window to window, and padding past a shorter stream's end is not counted: every
    window gives the loss of one pass over each whole stream. 23 tokens in 3 streams: 8, 7 and 7 targets."""
    model = make_model(cell)
    toks = tokens(n)
    expected = by_hand(model, toks, streams)
    for window in (1, 3, 4, 1024):
        assert evaluate(model, toks, streams, "cpu", window=window) == pytest.approx(expected, rel=1e-6)
    total, count = loss_sums(model, toks, streams, "cpu", window=4)
    assert count == n - 1
    assert total == pytest.approx(expected * (n - 1), rel=1e-6)


def test_the_state_matters_here():
    """Guard for the test above: with the state dropped at each window edge the loss would differ."""
    model = make_model()
    toks = tokens(23)
    batches = Streams(toks, 3, 4)
    total = 0.0
    with torch.no_grad():
        for k in range(len(batches)):
            x, y = batches.window(k)
            logits = model.eval()(x).logits.flatten(0, 1)
            total += F.cross_entropy(logits, y.flatten(), ignore_index=-100, reduction="sum").item()
    assert abs(total / 22 - evaluate(model, toks, 3, "cpu", window=4)) > 1e-3


def test_more_streams_than_targets_is_one_stream_per_target():
    model = make_model()
    toks = tokens(23)
    one_each = by_hand(model, toks, 22)
    assert evaluate(model, toks, 50, "cpu") == pytest.approx(one_each, rel=1e-6)
    assert evaluate(model, toks, 50, "cpu", window=1) == evaluate(model, toks, 22, "cpu", window=1)
    assert loss_sums(model, toks, 50, "cpu")[1] == 22


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_gives_the_model_back_in_its_mode(training):
    model = make_model()
    model.train(training)
    evaluate(model, tokens(30), 2, "cpu", window=4)
    assert model.training == training
    assert all(m.training == training for m in model.modules())


# -- the trainer's epochs --------------------------------------------------------------------------------------
def make_trainer(tmp_path, n=200, seed=0):
    cfg = TrainConfig(batch_size=2, seq_len=16, eval_interval=10, log_interval=5, warmup_steps=5, precision="fp32",
                      device="cpu", seed=seed, max_steps=100)
    toks = tokens(n, seed=1)
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=V, cell="lstm", hidden_size=12, num_layers=2,
                                              embedding_size=6, dropout=0.0, weight_drop=0.0))
    return Trainer(model, toks[: n - 40], toks[n - 40 :], cfg, tmp_path / "run", show_progress=False)


def epoch_offsets(trainer, epochs=8):
    """Where each epoch's streams start in the training split."""
    data, out = trainer.train_tokens, []
    for epoch in range(epochs):
        streams = trainer._epoch_streams(epoch)
        offset = len(data) - len(streams.tokens)
        assert np.array_equal(streams.tokens, data[offset:])
        assert np.array_equal(streams.window(0)[0][0].numpy(), data[offset : offset + 16])  # row 0 reads from there
        out.append(offset)
    return out


def test_each_epoch_after_the_first_starts_at_a_seeded_offset_below_the_window(tmp_path):
    offsets = epoch_offsets(make_trainer(tmp_path))
    assert offsets[0] == 0
    assert all(0 <= o < 16 for o in offsets) and len(set(offsets[1:])) > 1  # shifted, and not always alike
    assert epoch_offsets(make_trainer(tmp_path / "again")) == offsets  # seeded
    assert epoch_offsets(make_trainer(tmp_path / "other", seed=1)) != offsets


def test_a_new_epoch_starts_its_streams_from_the_zero_state(tmp_path):
    """The carried state belongs to the old epoch's streams: the first window of the next epoch starts from zeros,
    as one pass of the frozen model over that window gives; within an epoch the state is carried."""
    trainer = make_trainer(tmp_path)
    trainer.optimizer.step = lambda *a, **k: None  # frozen weights, so the state can be recomputed
    given = []
    forward = trainer.model.forward

    def spy(x, state=None, *args, **kwargs):
        given.append(state)
        return forward(x, state, *args, **kwargs)

    trainer.model.forward = spy
    windows = len(trainer._epoch_streams(0))
    assert windows == 5  # (160 - 1) // 2 targets per stream, in windows of 16
    for _ in range(windows + 2):
        trainer.train_step()
    assert (trainer.epoch, trainer.window) == (1, 2)
    assert [s is None for s in given] == [True, False, False, False, False, True, False]
    del trainer.model.forward
    x = torch.cat([trainer._epoch_streams(1).window(k)[0] for k in range(2)], 1)
    with torch.no_grad():
        expected = trainer.model.train()(x).state  # no dropout: training mode computes what train_step did
    for got, want in zip(trainer.state, expected, strict=True):
        torch.testing.assert_close(got, want)
