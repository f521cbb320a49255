"""--ema: the moving average of the weights against a NumPy reference, the swap, what checkpoints hold, validation
on the average, an exact resume, and the CLI."""

import json

import numpy as np
import pytest
import torch
from test_train import make_model, make_trainer, tokens_of

from rnnkit.checkpoint import BEST, MODEL, TRAINER_STATE, load_tensors
from rnnkit.cli import main
from rnnkit.errors import ConfigError
from rnnkit.train import evaluate
from rnnkit.train.averaging import WeightAverage, warmed_decay


def test_warmed_decay_rises_to_the_decay():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 8) == pytest.approx(0.5)
    assert warmed_decay(0.9, 100) == 0.9  # capped
    values = [warmed_decay(0.999, n) for n in range(10_000)]
    assert values == sorted(values) and values[-1] == 0.999


def test_average_matches_a_numpy_reference():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    average = WeightAverage(model, decay=0.8)
    seen = []
    for _ in range(12):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update(model)
        seen.append([p.detach().numpy().copy() for p in model.parameters()])
    expected = [w.astype(np.float64) for w in seen[0]]  # the first update copies
    for n, weights in enumerate(seen[1:]):
        d = min(0.8, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights, strict=True)]
    assert average.updates == 12
    for got, want in zip(average.parameters().values(), expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    # the live model is untouched by updating the average
    for got, want in zip(model.parameters(), seen[-1], strict=True):
        np.testing.assert_array_equal(got.detach().numpy(), want)


def test_swap_lends_the_average_and_gives_the_weights_back_even_on_error():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.5)
    average.update(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    own = model.weight.detach().clone()
    with average.swapped_into(model):
        torch.testing.assert_close(model.weight, own - 1.0)
    assert torch.equal(model.weight, own)
    with pytest.raises(RuntimeError, match="boom"), average.swapped_into(model):
        raise RuntimeError("boom")
    assert torch.equal(model.weight, own)


def test_validation_and_checkpoints_use_the_average_and_trainer_state_the_live_weights(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 4000)
    torch.manual_seed(0)
    trainer = make_trainer(make_model(len(vocab)), ids, tmp_path / "run", max_steps=20, ema=0.9, lr=1e-2)
    summary = trainer.fit()
    published, meta = load_tensors(tmp_path / "run" / MODEL)
    state, _ = load_tensors(tmp_path / "run" / TRAINER_STATE)
    averaged = trainer.average.parameters()
    for name, live in trainer.model.named_parameters():
        assert torch.equal(published[name], averaged[name]), name
        assert torch.equal(state[f"model.{name}"], live), name
        assert torch.equal(state[f"ema.{name}"], averaged[name]), name
    assert not all(torch.equal(published[n], p) for n, p in trainer.model.named_parameters())  # they differ
    assert torch.equal(load_tensors(tmp_path / "run" / BEST)[0]["head.weight"], published["head.weight"])
    # the validation figure is the averaged model's, not the live one's
    with trainer.averaged_weights():
        on_average = evaluate(trainer.model, trainer.val_tokens, 16, trainer.device)
    on_live = evaluate(trainer.model, trainer.val_tokens, 16, trainer.device)
    assert summary["val_loss"] == pytest.approx(on_average, rel=1e-6) and meta["val_loss"] == summary["val_loss"]
    assert on_live != pytest.approx(on_average, rel=1e-6)


def test_resume_continues_the_average_exactly(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 2000)
    torch.manual_seed(0)
    straight = make_trainer(make_model(len(vocab)), ids, tmp_path / "a", max_steps=30, ema=0.95)
    straight.fit()
    torch.manual_seed(0)
    make_trainer(make_model(len(vocab)), ids, tmp_path / "b", max_steps=30, ema=0.95).fit(until_step=17)
    torch.manual_seed(5)
    second = make_trainer(make_model(len(vocab)), ids, tmp_path / "b", max_steps=30, ema=0.95)
    second.resume()
    assert second.average.updates == 17
    second.fit()
    for (name, a), b in zip(straight.average.parameters().items(), second.average.parameters().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert load_tensors(tmp_path / "a" / MODEL)[0]["head.weight"].equal(
        load_tensors(tmp_path / "b" / MODEL)[0]["head.weight"])


def test_ema_added_on_resume_starts_from_the_live_weights(small_corpus, tmp_path):
    vocab, ids = tokens_of(small_corpus, 2000)
    make_trainer(make_model(len(vocab)), ids, tmp_path / "run", max_steps=10).fit()
    resumed = make_trainer(make_model(len(vocab)), ids, tmp_path / "run", max_steps=12, ema=0.9)
    resumed.resume()
    assert resumed.average.updates == 0
    resumed.fit()
    assert resumed.average.updates == 2


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_decay_outside_zero_one_is_refused(small_corpus, tmp_path, bad):
    vocab, ids = tokens_of(small_corpus, 2000)
    with pytest.raises(ConfigError, match=r"ema must be in \[0, 1\)"):
        make_trainer(make_model(len(vocab)), ids, tmp_path / "run", max_steps=5, ema=bad)


def test_cli_trains_with_ema_and_refuses_a_bad_decay(small_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_corpus), "--max-steps", "6", "--batch-size", "4", "--seq-len", "16",
                 "--hidden-size", "16", "--ema", "0.9", "--sample-length", "20", "--out", str(run), "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["ema"] == 0.9
    assert "sample" in capsys.readouterr().err
    assert main(["train", "--data", str(small_corpus), "--max-steps", "6", "--ema", "1", "--out",
                 str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ema must be in [0, 1)" in err[0] and "Traceback" not in err[0]
