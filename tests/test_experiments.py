"""The synthetic experiments: data generators, the baselines, a short run that learns, the CLI verb, gradient flow."""

import csv
import json
import math

import pytest
import torch
from conftest import torch_threads

from rnnkit.cli import main as cli_main
from rnnkit.errors import ConfigError
from rnnkit.experiments import (
    AddingConfig,
    AddingRegressor,
    CopyConfig,
    CopyTagger,
    GradientFlowConfig,
    adding_batch,
    baseline_loss,
    copy_batch,
    run_adding,
    state_gradient_norms,
)
from rnnkit.experiments.common import init_forget_bias
from rnnkit.nn import Recurrent


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def main(*argv) -> int:
    """``rnnkit ...`` in-process, through the real CLI entry point."""
    try:
        return cli_main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        return e.code


def quiet(_message: str) -> None:
    pass


# -- data ----------------------------------------------------------------------------------------------------
def test_adding_batch_layout_and_target():
    T = 31
    x, y = adding_batch(500, T, torch.Generator().manual_seed(0))
    assert x.shape == (500, T, 2) and y.shape == (500,)
    values, marker = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values <= 1)).all()
    assert set(marker.unique().tolist()) == {0.0, 1.0}
    assert (marker.sum(1) == 2).all()
    assert (marker[:, : T // 2].sum(1) == 1).all() and (marker[:, T // 2:].sum(1) == 1).all()
    torch.testing.assert_close(y, (values * marker).sum(1))


def test_adding_baseline_of_predicting_one_is_one_sixth():
    _, y = adding_batch(200_000, 10, torch.Generator().manual_seed(1))
    assert (y - 1).pow(2).mean().item() == pytest.approx(1 / 6, abs=0.003)


def test_adding_batches_follow_the_generator():
    a = adding_batch(4, 12, torch.Generator().manual_seed(7))
    b = adding_batch(4, 12, torch.Generator().manual_seed(7))
    c = adding_batch(4, 12, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_copy_batch_layout():
    T = 15
    x, y = copy_batch(300, T, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (300, T + 20) and x.dtype == torch.long
    symbols = x[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all() and len(symbols.unique()) == 8
    assert (x[:, 10:T + 9] == 0).all()  # T - 1 blanks
    assert (x[:, T + 9] == 9).all()  # the delimiter
    assert (x[:, T + 10:] == 0).all()
    assert (y[:, :T + 10] == 0).all()
    assert torch.equal(y[:, -10:], symbols)


@pytest.mark.parametrize("T", [5, 100])
def test_copy_baseline_is_the_memoryless_cross_entropy(T):
    assert baseline_loss(T) == pytest.approx(10 * math.log(8) / (T + 20))
    # The memoryless model: blank for sure up to the recall, then uniform over the 8 symbols.
    x, y = copy_batch(64, T, torch.Generator().manual_seed(0))
    logits = torch.full((64, T + 20, 10), -1e4)
    logits[:, :T + 10, 0] = 0.0
    logits[:, T + 10:, 1:9] = 0.0
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), y.reshape(-1))
    assert loss.item() == pytest.approx(baseline_loss(T), rel=1e-5)


# -- models --------------------------------------------------------------------------------------------------
def test_models_return_output():
    out = AddingRegressor("gru", 8)(torch.rand(3, 6, 2), targets=torch.rand(3))
    assert out.logits.shape == (3,) and out.loss.dim() == 0 and out.state.shape == (1, 3, 8)
    x, y = copy_batch(2, 4)
    out = CopyTagger("lstm", 8, T=4)(x, targets=y)
    assert out.logits.shape == (2, 24, 10) and out.loss.dim() == 0 and len(out.state) == 2


def test_forget_bias_init():
    rnn = Recurrent("lstm", 2, 16)
    init_forget_bias(rnn, "1.5", T=50)
    b = rnn.cells[0].bias_ih + rnn.cells[0].bias_hh
    assert torch.allclose(b[16:32], torch.full((16,), 1.5))
    init_forget_bias(rnn, "chrono", T=50)
    b = (rnn.cells[0].bias_ih + rnn.cells[0].bias_hh).detach()
    assert (b[16:32] >= 0).all() and (b[16:32] <= math.log(49) + 1e-6).all()
    torch.testing.assert_close(b[:16], -b[16:32])
    gru = Recurrent("gru", 2, 4)
    before = [p.clone() for p in gru.parameters()]
    init_forget_bias(gru, "chrono", T=50)
    assert all(torch.equal(a, p) for a, p in zip(before, gru.parameters(), strict=True))


# -- config errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, fragment", [
    ({"T": 2}, "--T"), ({"cell": "transformer"}, "unknown cell"), ({"minutes": 0}, "--minutes"),
    ({"minutes": -1.0}, "--minutes"), ({"max_steps": 0}, "--max-steps"), ({"lr": 0.0}, "--lr"),
    ({"hidden_size": 0}, "--hidden-size"), ({"forget_bias": "high"}, "--forget-bias"),
    ({"grad_clip": -1.0}, "--grad-clip"),
])
def test_bad_settings_raise_config_error(kwargs, fragment):
    for cls in (AddingConfig, CopyConfig):
        with pytest.raises(ConfigError, match=fragment):
            cls(**kwargs)


def test_bad_gradient_flow_settings_raise_config_error():
    with pytest.raises(ConfigError, match="--T"):
        GradientFlowConfig(T=1)
    with pytest.raises(ConfigError, match="--train-steps"):
        GradientFlowConfig(train_steps=0)
    with pytest.raises(ConfigError, match="--explode-lr"):
        GradientFlowConfig(explode_lr=0)


@pytest.mark.parametrize("argv, fragment", [
    (["adding", "--T", "2"], "--T must be at least 3"),
    (["copy", "--cell", "elman"], "unknown cell 'elman'"),
    (["adding", "--minutes", "0"], "--minutes must be a positive number"),
    (["gradient-flow", "--train-steps", "-3"], "--train-steps"),
])
def test_cli_bad_flags_are_one_line_errors(argv, fragment, capsys, tmp_path):
    code = main("experiment", *argv, "--out", tmp_path / "out")
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err and "—" in err
    assert not (tmp_path / "out").exists()


# -- training ------------------------------------------------------------------------------------------------
def test_short_adding_run_learns(tmp_path):
    config = AddingConfig(cell="lstm", T=20, hidden_size=32, max_steps=800, eval_every=200, test_size=500,
                          device="cpu")
    result = run_adding(config, tmp_path, log=quiet)
    assert result["baseline_mse"] == pytest.approx(1 / 6, abs=0.02)
    assert result["steps"] == 800
    assert result["test_mse"] < 0.05 < result["baseline_mse"]


@pytest.mark.parametrize("name, csv_name, keys", [
    ("adding", "adding.csv", {"experiment", "cell", "T", "test_mse", "baseline_mse", "steps", "minutes"}),
    ("copy", "copy.csv", {"experiment", "cell", "T", "test_loss", "baseline_loss", "accuracy", "steps", "minutes"}),
])
def test_cli_writes_csv_png_and_a_json_last_line(name, csv_name, keys, capsys, tmp_path):
    out_dir = tmp_path / "run"
    code = main("experiment", name, "--cell", "gru", "--T", 6, "--hidden-size", 8, "--batch-size", 4,
                "--max-steps", 6, "--eval-every", 3, "--test-size", 20, "--device", "cpu", "--out", out_dir)
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert keys <= set(result) and result["experiment"] == name and result["cell"] == "gru" and result["T"] == 6
    assert result["steps"] == 6
    rows = list(csv.DictReader((out_dir / csv_name).open()))
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert (out_dir / csv_name.replace(".csv", ".png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "step 6" in err  # progress on stderr
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    code = main("experiment", name, "--cell", "lstm", "--T", 6, "--max-steps", 2, "--out", out_dir)  # again
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and f"already holds {csv_name}" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_cli_adding_columns(capsys, tmp_path):
    main("experiment", "adding", "--T", 5, "--hidden-size", 4, "--max-steps", 2, "--eval-every", 1,
         "--test-size", 10, "--device", "cpu", "--out", tmp_path)
    capsys.readouterr()
    header = (tmp_path / "adding.csv").read_text().splitlines()[0]
    assert header == "step,elapsed_s,train_mse,test_mse"


# -- gradient flow -------------------------------------------------------------------------------------------
def test_state_gradient_norms_match_a_hand_written_loop():
    torch.manual_seed(0)
    model = AddingRegressor("lstm", 6, forget_bias=1.0).double()
    x, y = adding_batch(5, 7, torch.Generator().manual_seed(0))
    x, y = x.double(), y.double()
    norms = state_gradient_norms(model, x, y)
    cell, hs = model.rnn.cells[0], []
    state = cell.init_state(5, dtype=torch.float64)
    for t in range(7):
        state = cell(x[:, t], state)
        state[0].retain_grad()
        hs.append(state[0])
    (model.head(hs[-1]).squeeze(-1) - y).pow(2).sum().backward()
    expected = torch.stack([h.grad.norm(dim=-1).mean() for h in hs])
    torch.testing.assert_close(norms["h"], expected)
    assert norms["c"].shape == (7,) and math.isnan(norms["c"][-1]) and (norms["c"][:-1] > 0).all()


def test_gradient_flow_writes_plots_and_shows_vanishing_and_exploding(capsys, tmp_path):
    code = main("experiment", "gradient-flow", "--T", 30, "--hidden-size", 32, "--batch-size", 16,
                "--probe-size", 16, "--train-steps", 5, "--explode-steps", 30, "--explode-lr", 0.5, "--device", "cpu",
                "--out", tmp_path)
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    for name in ("gradient_flow.png", "exploding.png", "gradient_flow.csv", "exploding.csv"):
        assert (tmp_path / name).stat().st_size > 0
    ratios = result["grad_ratio_first_last"]
    assert set(ratios) == {"rnn", "lstm", "gru"}
    assert ratios["rnn"]["init"] < 1e-4  # the tanh RNN's gradient vanishes over 30 steps
    assert ratios["lstm"]["init"] > 100 * ratios["rnn"]["init"]
    rows = list(csv.DictReader((tmp_path / "gradient_flow.csv").open()))
    rnn = [float(r["rnn_init"]) for r in rows]
    assert len(rows) == 30 and all(a < b for a, b in zip(rnn[:-1], rnn[1:], strict=True))
    explode = result["exploding"]
    assert explode["clipped"]["diverged_at"] is None and explode["clipped"]["final_loss"] < 1.0
    assert explode["unclipped"]["diverged_at"] is not None
    assert explode["unclipped"]["max_grad_norm"] > 1e3 * explode["clipped"]["max_grad_norm"]
    assert explode["unclipped"]["max_spectral_radius"] > 1 > explode["clipped"]["max_spectral_radius"]
