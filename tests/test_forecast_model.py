"""SequenceForecaster: shapes and both modes, padding invariance, the seasonal-naive start, scaling kept in the
checkpoint, and learning a seasonal series in seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.baselines.forecast import mase, seasonal_naive
from rnnkit.checkpoint import build_model, load_model_tensors, load_tensors, model_tensors, save_tensors
from rnnkit.data.forecasting import train_val_windows
from rnnkit.errors import ConfigError, CorpusError
from rnnkit.models import MODEL_KINDS
from rnnkit.models.forecaster import ForecasterConfig, SequenceForecaster
from rnnkit.train.batches import BatchTrainConfig, BatchTrainer


def make(**kw) -> SequenceForecaster:
    cfg = {"input_size": 1, "horizon": 5, "hidden_size": 8, "cell": "gru", **kw}
    model = SequenceForecaster(ForecasterConfig(**cfg))
    for p in model.parameters():  # a trained-looking network: the zero-initialised head would hide the encoder
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def positive(B: int, T: int, C: int = 1) -> torch.Tensor:
    return torch.rand(B, T, C) * 5 + 1


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
@pytest.mark.parametrize("season", [0, 1, 3])
def test_shapes_and_loss(mode, season):
    model = make(mode=mode, season=season, log=True, members=2).train()
    x, y = positive(4, 12), torch.rand(4, 5) + 1
    out = model(x, targets=y)
    assert out.logits.shape == (4, 5) and out.loss.dim() == 0
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model(x).loss is None


def test_covariates_direct_only():
    model = make(input_size=3, bidirectional=True)
    assert model(positive(2, 7, 3)).logits.shape == (2, 5)
    with pytest.raises(ConfigError, match="direct"):
        ForecasterConfig(input_size=3, mode="autoregressive")
    with pytest.raises(ConfigError, match="direct"):
        ForecasterConfig(input_size=1, mode="autoregressive", bidirectional=True)


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
@pytest.mark.parametrize("path", ["fused", "explicit"])
def test_padding_never_changes_a_forecast(mode, path):
    model = make(mode=mode, season=3, log=True, path=path)
    a, b = positive(1, 6), positive(1, 9)
    alone = torch.cat([model(a).logits, model(b).logits])
    padded = torch.zeros(2, 9, 1)
    padded[0, :6], padded[1] = a[0], b[0]
    padded[0, 6:] = float("nan")  # whatever padding holds
    together = model(padded, lengths=torch.tensor([6, 9])).logits
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_untrained_network_is_the_seasonal_naive_forecast(mode):
    model = SequenceForecaster(ForecasterConfig(input_size=1, horizon=7, season=3, log=True, mode=mode)).eval()
    series = np.arange(1.0, 11.0)
    got = model(torch.tensor(series, dtype=torch.float32)[None, :, None]).logits[0].detach().numpy()
    np.testing.assert_allclose(got, seasonal_naive(series, 7, 3), rtol=1e-5)


def test_scaling_is_fitted_saved_and_restored(tmp_path):
    model = make(season=2, log=True)
    series = np.exp(np.linspace(0, 3, 40))[:, None]
    model.fit_scaling([series])
    z = np.log(series[:, 0])
    assert model.input_mean[0] == 0  # the target is centred per window instead
    np.testing.assert_allclose(model.input_std[0].item(), np.std(z[2:] - z[:-2]), rtol=1e-5)
    save_tensors(tmp_path / "m.safetensors", model_tensors(model))
    clone = build_model({"kind": "forecaster", "model": model.config.to_dict()})
    load_model_tensors(clone, load_tensors(tmp_path / "m.safetensors")[0], tmp_path)
    x = torch.tensor(series[-10:], dtype=torch.float32)[None]
    torch.testing.assert_close(clone.eval()(x).logits, model(x).logits)
    assert MODEL_KINDS["forecaster"][0] is SequenceForecaster


def test_levels_mode_scales_by_the_series():
    model = make(season=0)
    model.fit_scaling([np.arange(10.0)[:, None]])
    assert model.input_mean[0].item() == pytest.approx(4.5)
    assert model.input_std[0].item() == pytest.approx(np.std(np.arange(10.0)), rel=1e-5)


def test_log_of_a_non_positive_target_is_an_error():
    with pytest.raises(CorpusError, match="positive"):
        make(log=True)(torch.zeros(1, 4, 1))


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_learns_a_seasonal_series(mode, tmp_path):
    """A noisy seasonal series with a trend: a few seconds of training beat the seasonal-naive forecast clearly."""
    rng = np.random.default_rng(0)
    t = np.arange(200)
    y = 10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, len(t))
    train, test = y[:-12, None], y[-12:]
    tr, va = train_val_windows(train, 24, 12, 12, min_length=12)
    torch.manual_seed(0)
    model = SequenceForecaster(ForecasterConfig(input_size=1, horizon=12, hidden_size=16, cell="gru", season=12,
                                                mode=mode))
    model.fit_scaling([train])
    config = BatchTrainConfig(batch_size=16, lr=3e-3, epochs=15, eval_interval=20, precision="fp32", warmup_steps=5,
                              device="cpu")
    BatchTrainer(model, tr, va, config, tmp_path, classes=False, show_progress=False).fit()
    forecast = model.eval()(torch.tensor(train[-24:], dtype=torch.float32)[None]).logits[0].detach().numpy()
    naive = seasonal_naive(train[:, 0], 12, 12)
    ours, naive = mase(train[:, 0], test, forecast, 12), mase(train[:, 0], test, naive, 12)
    assert ours < 0.6 * naive, (ours, naive)
