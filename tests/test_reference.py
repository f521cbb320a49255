"""The NumPy reference against torch: forward outputs, BPTT gradients (autograd, float64), finite differences,
optimizer steps, and learning "happy"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rnnkit import reference as R
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.nn import Recurrent
from rnnkit.reference import heads

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
HEADS = ["cross_entropy", "mse_every_step", "mse_last_step"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "happy.py"
B, T, C, H, V = 3, 5, 4, 6, 7


# -- building a case on both sides ---------------------------------------------------------------------------
def make_case(cell: str, head: str, with_state: bool, seed: int = 0, sizes=(B, T, C, H, V), bias=True):
    """A torch layer + head in float64 with their weights as reference params, and random data."""
    b, t, c, h, v = sizes
    torch.manual_seed(seed)
    layer = Recurrent(cell, c, h, bias=bias, path="explicit").double()
    linear = nn.Linear(h, v).double()
    params = R.params_from_cell(layer.cells[0])
    params["weight_hy"], params["bias_y"] = R.load.to_numpy(linear.weight), R.load.to_numpy(linear.bias)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, t, c))
    state = None
    if with_state:
        state = tuple(0.5 * rng.standard_normal((b, h)) for _ in range(2 if cell == "lstm" else 1))
        state = state if cell == "lstm" else state[0]
    if head == "cross_entropy":
        targets = rng.integers(0, v, (b, t))
        targets[0, 1] = heads.IGNORE_INDEX  # one step without a target
    elif head == "mse_every_step":
        targets = rng.standard_normal((b, t, v))
    else:
        targets = rng.standard_normal((b, v))
    return layer, linear, params, x, state, targets


def reference_loss(cell: str, head: str, params: dict, x, state, targets):
    """Forward, head, BPTT: ``(loss, grads, dx, dstate)``."""
    fns = R.CELLS[cell]
    hs, _, cache = fns.forward(params, x, state)  # (B, T, H)
    if head == "cross_entropy":
        out = heads.cross_entropy(params, hs, targets)
        dhs = out.dy
    elif head == "mse_every_step":
        out = heads.mse(params, hs, targets)
        dhs = out.dy
    else:
        out = heads.mse(params, hs[:, -1], targets)
        dhs = np.zeros_like(hs)
        dhs[:, -1] = out.dy  # only the last step has a loss
    grads, dx, dstate = fns.backward(params, cache, dhs)
    return out.loss, {**grads, **out.grads}, dx, dstate


def torch_state(state):
    """A reference state (B, H) or pair of them -> torch's (1, B, H) leaves that collect gradients."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(torch.tensor(s[None], requires_grad=True) for s in state)
    return torch.tensor(state[None], requires_grad=True)


def torch_loss(layer: Recurrent, linear: nn.Linear, head: str, x, state, targets):
    """The same loss through torch autograd: ``(loss, grads, dx, dstate)``."""
    xt = torch.tensor(x, requires_grad=True)
    st = torch_state(state)
    y, _ = layer(xt, st)  # (B, T, H)
    if head == "cross_entropy":
        loss = F.cross_entropy(linear(y).flatten(0, 1), torch.tensor(targets).flatten())
    elif head == "mse_every_step":
        loss = F.mse_loss(linear(y), torch.tensor(targets))
    else:
        loss = F.mse_loss(linear(y[:, -1]), torch.tensor(targets))
    loss.backward()
    grads = {name: p.grad for name, p in layer.cells[0].named_parameters()}
    grads["weight_hy"], grads["bias_y"] = linear.weight.grad, linear.bias.grad
    grads = {k: g.numpy() for k, g in grads.items()}
    dstate = None
    if st is not None:
        dstate = tuple(s.grad[0].numpy() for s in st) if isinstance(st, tuple) else st.grad[0].numpy()
    return loss.item(), grads, xt.grad.numpy(), dstate


def assert_same_state(a, b, **tol):
    if isinstance(a, tuple):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(u, v, **tol)
    else:
        np.testing.assert_allclose(a, b, **tol)


# -- forward -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_rnnkit_and_torch_nn(cell, with_state):
    layer, _, params, x, state, _ = make_case(cell, "cross_entropy", with_state)
    hs, final, _ = R.CELLS[cell].forward(params, x, state)
    fused = Recurrent(cell, C, H, path="fused").double()
    fused.load_torch_state_dict(layer.torch_state_dict())
    with torch.no_grad():
        for module in (layer, fused, layer.to_torch()):  # rnnkit explicit, rnnkit fused, torch.nn.RNN/...
            y, s = module(torch.tensor(x), torch_state(state))
            np.testing.assert_allclose(hs, y.numpy(), rtol=1e-12, atol=1e-12)
            s = tuple(p[0].numpy() for p in s) if isinstance(s, tuple) else s[0].numpy()
            assert_same_state(final, s, rtol=1e-12, atol=1e-12)


# -- gradients -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["explicit", "fused"])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_equal_autograd(cell, head, with_state, path):
    layer, linear, params, x, state, targets = make_case(cell, head, with_state)
    if path == "fused":
        fused = Recurrent(cell, C, H, path="fused").double()
        fused.load_torch_state_dict(layer.torch_state_dict())
        layer = fused
    loss, grads, dx, dstate = reference_loss(cell, head, params, x, state, targets)
    t_loss, t_grads, t_dx, t_dstate = torch_loss(layer, linear, head, x, state, targets)
    assert loss == pytest.approx(t_loss, rel=1e-12)
    assert grads.keys() == t_grads.keys() == params.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], t_grads[name], rtol=1e-8, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(dx, t_dx, rtol=1e-8, atol=1e-10)
    if with_state:
        assert_same_state(dstate, t_dstate, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_cell_without_bias(cell):
    layer, linear, params, x, state, targets = make_case(cell, "mse_every_step", True, bias=False)
    assert "bias_ih" not in params
    _, grads, dx, _ = reference_loss(cell, "mse_every_step", params, x, state, targets)
    _, t_grads, t_dx, _ = torch_loss(layer, linear, "mse_every_step", x, state, targets)
    assert grads.keys() == t_grads.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], t_grads[name], rtol=1e-8, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_equal_finite_differences(cell, head):
    """Central differences (f(w + ε) - f(w - ε)) / 2ε on every parameter entry, the input and h0/c0."""
    _, _, params, x, state, targets = make_case(cell, head, True, seed=1, sizes=(2, 3, 2, 3, 3))
    _, grads, dx, dstate = reference_loss(cell, head, params, x, state, targets)
    parts = state if cell == "lstm" else (state,)  # the arrays are perturbed in place
    dparts = dstate if cell == "lstm" else (dstate,)
    wrt = {**params, "x": x, **{f"state{k}": s for k, s in enumerate(parts)}}
    analytic = {**grads, "x": dx, **{f"state{k}": d for k, d in enumerate(dparts)}}

    def loss() -> float:
        return reference_loss(cell, head, params, x, state, targets)[0]

    eps = 1e-6
    for name, array in wrt.items():
        numeric = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            saved = array[idx]
            array[idx] = saved + eps
            up = loss()
            array[idx] = saved - eps
            down = loss()
            array[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


# -- a whole language model ----------------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_language_model_equals_rnnkit_model(cell, tie):
    E = H if tie else C
    model = LanguageModel(
        LanguageModelConfig(V, cell, hidden_size=H, num_layers=1, embedding_size=E, tie_weights=tie)
    ).double().eval()
    params = R.params_from_language_model(model)
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, V, (B, T))
    targets = np.roll(tokens, -1, axis=1)
    targets[:, -1] = heads.IGNORE_INDEX
    state = tuple(0.5 * rng.standard_normal((B, H)) for _ in range(2))
    state = state if cell == "lstm" else state[0]

    ref = R.language_model_loss(cell, params, tokens, targets, state)
    st = torch_state(state)
    out = model(torch.tensor(tokens), st)
    loss = F.cross_entropy(out.logits.flatten(0, 1), torch.tensor(targets).flatten())
    loss.backward()

    np.testing.assert_allclose(ref.logits, out.logits.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert ref.loss == pytest.approx(loss.item(), rel=1e-12)
    assert_same_state(ref.state, tuple(s[0].detach().numpy() for s in out.state) if cell == "lstm"
                      else out.state[0].detach().numpy(), rtol=1e-12, atol=1e-12)
    torch_grads = {name: getattr(model.rnn.cells[0], name).grad.numpy() for name in R.load.CELL_NAMES}
    torch_grads["bias_y"] = model.head.bias.grad.numpy()
    ref_grads = dict(ref.grads)
    if tie:  # one shared matrix: its gradient is the sum of both uses
        torch_grads["shared"] = model.embedding.weight.grad.numpy()
        ref_grads["shared"] = ref_grads.pop("embedding") + ref_grads.pop("weight_hy")
    else:
        torch_grads["embedding"] = model.embedding.weight.grad.numpy()
        torch_grads["weight_hy"] = model.head.weight.grad.numpy()
    assert ref_grads.keys() == torch_grads.keys()
    for name in ref_grads:
        np.testing.assert_allclose(ref_grads[name], torch_grads[name], rtol=1e-8, atol=1e-10, err_msg=name)
    t_dstate = tuple(s.grad[0].numpy() for s in st) if cell == "lstm" else st.grad[0].numpy()
    assert_same_state(ref.dstate, t_dstate, rtol=1e-8, atol=1e-10)


def test_loader_refuses_a_stacked_model():
    model = LanguageModel(LanguageModelConfig(V, "gru", hidden_size=H, num_layers=2, embedding_size=C))
    with pytest.raises(ValueError, match="num_layers=1"):
        R.params_from_language_model(model)


# -- optimizers ----------------------------------------------------------------------------------------------
def run_both(make_ref, make_torch, steps: int = 3):
    """The same gradients into a reference optimizer and a torch one; the parameters must stay equal."""
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(4)}
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    ref, opt = make_ref(), make_torch(list(tensors.values()))
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        ref.step(params, grads)
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
        for k in params:
            np.testing.assert_allclose(params[k], tensors[k].detach().numpy(), rtol=1e-12, atol=1e-14)
    return params


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_equals_torch(momentum):
    run_both(
        lambda: R.SGD(lr=0.1, momentum=momentum), lambda p: torch.optim.SGD(p, lr=0.1, momentum=momentum)
    )


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_equals_torch(betas):
    run_both(
        lambda: R.Adam(lr=0.05, betas=betas, eps=1e-6),
        lambda p: torch.optim.Adam(p, lr=0.05, betas=betas, eps=1e-6),
        steps=5,
    )


# -- learning ------------------------------------------------------------------------------------------------
def test_reference_learns_happy():
    """Vocabulary h, a, p, y; inputs h, a, p, p; targets a, p, p, y. After the second p comes y, not p."""
    vocab = "hapy"
    tokens = np.array([[vocab.index(ch) for ch in "happ"]])
    targets = np.array([[vocab.index(ch) for ch in "appy"]])
    params = R.init_params("rnn_tanh", len(vocab), 8, len(vocab), np.random.default_rng(0))
    opt = R.Adam(lr=0.05)
    for _ in range(300):
        result = R.language_model_loss("rnn_tanh", params, tokens, targets)
        opt.step(params, result.grads)
    logits = R.language_model_loss("rnn_tanh", params, tokens, targets).logits[0]  # (T, V)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert "".join(vocab[k] for k in p.argmax(-1)) == "appy"
    assert (p.max(-1) > 0.9).all(), p
    # and generating from "h", feeding each prediction back in, spells the word
    word, h = "h", None
    for _ in range(4):
        hs, h, _ = R.rnn.forward(params, heads.one_hot(np.array([[vocab.index(word[-1])]]), 4), h)
        word += vocab[int((hs[0, -1] @ params["weight_hy"].T + params["bias_y"]).argmax())]
    assert word == "happy"


def test_happy_example_runs():
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "after training" in out.stdout.lower()
    assert "happy" in out.stdout


def test_reference_does_not_import_torch():
    code = "import sys, rnnkit.reference; assert 'torch' not in sys.modules, 'torch was imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
