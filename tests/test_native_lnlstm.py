"""The layer-normalised LSTM's compiled training path (``rnnkit.native.lnlstm``) against autograd's loop over the
same cell: outputs, final states and every gradient, in fp32 and under bf16 autocast, and when it must step aside."""

from __future__ import annotations

import pytest
import torch
from conftest import require_tool, torch_threads

from rnnkit import native
from rnnkit.native import lnlstm
from rnnkit.nn.cells import LayerNormLSTMCell
from rnnkit.nn.recurrent import Recurrent


@pytest.fixture(autouse=True)
def kernels():
    require_tool(native.library() is not None, f"the native kernels are unavailable: {native.unavailable()}",
                 "RNNKIT_REQUIRE_COMPILER")


def cell_with_gains(C: int, H: int, seed: int = 0) -> LayerNormLSTMCell:
    """Layer-norm gains and offsets away from 1 and 0, so a kernel that ignored one of them would show."""
    torch.manual_seed(seed)
    cell = LayerNormLSTMCell(C, H)
    with torch.no_grad():
        for ln in (cell.ln_ih, cell.ln_hh, cell.ln_c):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.3, 0.3)
    return cell


def autograd_loop(cell, x, state):
    gx = cell.input_projection(x)
    ys = []
    for g in gx.unbind(1):
        state = cell.step(g, state)
        ys.append(state[0])
    return torch.stack(ys, 1), state


def run(fn, cell, x, h0, c0, weights, bf16=False):
    """Outputs, final state, and the gradients of a loss that reads all three, for every parameter and input."""
    cell.zero_grad()
    x, h0, c0 = (t.detach().clone().requires_grad_() for t in (x, h0, c0))
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        ys, (h, c) = fn(cell, x, (h0, c0))
    wy, wh, wc = weights
    ((ys.float() * wy).sum() + (h.float() * wh).sum() + (c.float() * wc).sum()).backward()
    grads = {n: p.grad.clone() for n, p in cell.named_parameters()}
    grads.update(x=x.grad, h0=h0.grad, c0=c0.grad)
    return (ys.detach().float(), h.detach().float(), c.detach().float()), grads


def problem(B=5, T=9, C=6, H=16, seed=0):
    cell = cell_with_gains(C, H, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(B, T, C, generator=g)
    h0, c0 = 0.5 * torch.randn(B, H, generator=g), 0.5 * torch.randn(B, H, generator=g)
    weights = torch.randn(B, T, H, generator=g), torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    return cell, x, h0, c0, weights


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_the_cell_takes_the_native_path_on_fp32_cpu_tensors():
    cell, x, h0, c0, _ = problem()
    assert lnlstm.available(16, x, h0, cell.weight_hh)
    assert cell.scan(x, (h0, c0)) is not None
    assert not lnlstm.available(16, x.double(), h0.double(), cell.weight_hh.double())
    assert not lnlstm.available(lnlstm.MAX_HIDDEN + 1, x, h0, cell.weight_hh)
    assert cell.double().scan(x.double(), (h0.double(), c0.double())) is None  # float64: autograd's loop


@pytest.fixture
def threads(request):
    """torch's thread count, which the kernels' OpenMP passes share, set to the test's parameter and restored."""
    with torch_threads(request.param):
        yield request.param


@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
@pytest.mark.parametrize("B, T, H", [(5, 9, 16), (1, 1, 8), (3, 40, 32)])
def test_fp32_matches_the_autograd_loop(B, T, H, threads):
    """With 1, 2 and 3 threads the rows split unevenly (5 rows, 3 rows) or not at all (1 row), and each thread's
    share of the parameters' gradients is summed in its own block."""
    cell, x, h0, c0, weights = problem(B, T, 6, H)
    (want, want_grads) = run(autograd_loop, cell, x, h0, c0, weights)
    (got, got_grads) = run(lambda c, x, s: c.scan(x, s), cell, x, h0, c0, weights)
    assert native.library().rnnkit_lnlstm_threads() == threads
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert set(got_grads) == set(want_grads) and len(got_grads) == 13  # ten parameters, x, h0, c0
    for name, w in want_grads.items():
        assert relative(got_grads[name], w) < 5e-5, name


def test_bf16_autocast_is_as_close_to_fp32_as_autograds_bf16():
    cell, x, h0, c0, weights = problem(B=8, T=12, C=6, H=64)
    _, exact = run(autograd_loop, cell, x, h0, c0, weights)
    (y_auto, *_), auto = run(autograd_loop, cell, x, h0, c0, weights, bf16=True)
    (y_native, *_), got = run(lambda c, x, s: c.scan(x, s), cell, x, h0, c0, weights, bf16=True)
    (y_exact, *_), _ = run(autograd_loop, cell, x, h0, c0, weights)
    assert relative(y_native, y_exact) < 2 * relative(y_auto, y_exact) + 1e-3
    for name in exact:
        assert relative(got[name], exact[name]) < 2 * relative(auto[name], exact[name]) + 1e-3, name
        assert relative(got[name], exact[name]) < 0.1, name  # and bf16 products stay bf16-accurate


def test_the_layer_gives_the_same_results_with_and_without_the_kernels(monkeypatch):
    """A two-layer stack with weight drop, in training: the same masks are drawn either way, so the updates agree."""
    torch.manual_seed(3)
    layer = Recurrent("lnlstm", 5, 12, num_layers=2, weight_drop=0.3).train()
    x = torch.randn(4, 7, 5)

    def grads():
        layer.zero_grad()
        torch.manual_seed(11)
        y, (h, c) = layer(x)
        (y.sum() + h.pow(2).sum() + c.sum()).backward()
        return y.detach(), {n: p.grad.clone() for n, p in layer.named_parameters()}

    calls = []
    scan = lnlstm.scan
    monkeypatch.setattr(lnlstm, "scan", lambda *a: calls.append(1) or scan(*a))
    y_native, g_native = grads()
    assert len(calls) == 2  # one window per layer
    monkeypatch.setattr(lnlstm, "available", lambda *args: False)
    y_loop, g_loop = grads()
    assert len(calls) == 2
    torch.testing.assert_close(y_native, y_loop, rtol=1e-5, atol=1e-5)
    for name, g in g_loop.items():
        assert relative(g_native[name], g) < 5e-5, name


def test_cases_it_does_not_cover_fall_back_to_the_loop(monkeypatch):
    calls = []
    monkeypatch.setattr(lnlstm, "scan", lambda *a: calls.append(1))
    x = torch.randn(3, 6, 4)
    Recurrent("lnlstm", 4, 8, zoneout=0.1)(x)
    Recurrent("lnlstm", 4, 8, recurrent_dropout=0.1)(x)
    Recurrent("lnlstm", 4, 8)(x, lengths=torch.tensor([6, 2, 4]))  # padded: the loop's masks keep states
    assert calls == []


def test_no_grad_forward_agrees_and_returns_its_buffers():
    cell, x, h0, c0, weights = problem(B=4, T=20, C=6, H=16)
    (want, _) = run(autograd_loop, cell, x, h0, c0, weights)
    with torch.no_grad():
        first = cell.scan(x, (h0, c0))
        kept = {k: len(v) for k, v in lnlstm._POOL.free.items()}
        again = cell.scan(x, (h0, c0))
    assert {k: len(v) for k, v in lnlstm._POOL.free.items()} == kept  # reused, not grown
    for got in (first, again):
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1][1], want[2], rtol=1e-5, atol=1e-5)


def test_buffers_made_under_inference_mode_are_not_handed_to_training():
    """Under ``torch.inference_mode`` (sampling, ``rnnkit eval``) the pool's buffers are inference tensors, which
    may not be written outside it: a training pass after one gets buffers of its own."""
    cell, x, h0, c0, weights = problem(B=3, T=10, C=6, H=16)
    with torch.inference_mode():
        for _ in range(2):  # the second pass reuses the first one's buffers
            ys, _ = cell.scan(x, (h0, c0))
            assert ys.is_inference()
    (want, want_grads) = run(autograd_loop, cell, x, h0, c0, weights)
    (got, got_grads) = run(lambda c, x, s: c.scan(x, s), cell, x, h0, c0, weights)
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    for name, w in want_grads.items():
        assert relative(got_grads[name], w) < 5e-5, name


@pytest.mark.parametrize("B", [1, 3])
def test_outputs_are_not_views_of_pooled_buffers(B):
    """At B = 1 the (T, B, H) -> (B, T, H) transpose is already contiguous: a view of the pool's buffer would be
    overwritten by the next pass (the next layer, or another request in a server)."""
    cell, x, h0, c0, _ = problem(B=B, T=8, C=6, H=16)
    with torch.no_grad():
        y, (h, c) = cell.scan(x, (h0, c0))
        kept = y.clone(), h.clone(), c.clone()
        cell.scan(torch.randn_like(x), (h0, c0))  # same shapes: the same buffers from the pool
    for got, want in zip((y, h, c), kept, strict=True):
        assert torch.equal(got, want)


def test_two_graphs_alive_at_once_keep_their_own_buffers():
    """Buffers go back to the pool only after their backward pass: a second forward before the first backward
    must not overwrite what the first saved."""
    cell, x, h0, c0, weights = problem(B=3, T=10, C=6, H=16)
    x2 = torch.randn_like(x)
    _, want1 = run(autograd_loop, cell, x, h0, c0, weights)
    _, want2 = run(autograd_loop, cell, x2, h0, c0, weights)
    wy, wh, wc = weights
    cell.zero_grad()
    losses = []
    for inp in (x, x2):
        ys, (h, c) = cell.scan(inp, (h0, c0))
        losses.append((ys * wy).sum() + (h * wh).sum() + (c * wc).sum())
    losses[1].backward()
    second = {n: p.grad.clone() for n, p in cell.named_parameters()}
    cell.zero_grad()
    losses[0].backward()
    first = {n: p.grad.clone() for n, p in cell.named_parameters()}
    for name in first:
        assert relative(first[name], want1[name]) < 5e-5, name
        assert relative(second[name], want2[name]) < 5e-5, name


def test_a_cell_without_biases_matches_too():
    torch.manual_seed(5)
    cell = LayerNormLSTMCell(6, 16, bias=False)
    _, x, h0, c0, weights = problem(B=3, T=7, C=6, H=16)
    (want, want_grads) = run(autograd_loop, cell, x, h0, c0, weights)
    (got, got_grads) = run(lambda c, x, s: c.scan(x, s), cell, x, h0, c0, weights)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert len(got_grads) == 11  # eight parameters, x, h0, c0
    for name, w in want_grads.items():
        assert relative(got_grads[name], w) < 5e-5, name


def test_the_pool_keeps_at_most_its_limit_and_drops_the_oldest_shapes_first(monkeypatch):
    monkeypatch.setattr(lnlstm._Pool, "LIMIT", 12 << 10)  # one window's buffers here are ~10 KB
    cell, x, h0, c0, weights = problem(B=2, T=30, C=6, H=16)
    (want, _) = run(autograd_loop, cell, x, h0, c0, weights)
    with torch.no_grad():
        for T in (30, 29, 28, 30):  # an epoch's short last windows bring new shapes
            y, _ = cell.scan(x[:, :T], (h0, c0))
            torch.testing.assert_close(y, want[0][:, :T], rtol=1e-5, atol=1e-5)
    pool = lnlstm._POOL
    assert pool.bytes == sum(t.nbytes for kept in pool.free.values() for t in kept) <= 12 << 10
    assert ((31, 2, 16), torch.float32, False) in pool.free  # the shape used last is kept
    assert ((30, 2, 16), torch.float32, False) not in pool.free  # the 29-step window's, used before it, is gone


@pytest.mark.parametrize("gain", [50.0, 300.0])
def test_saturated_gates_stay_finite_and_accurate(gain):
    """Pre-activations far past where sigmoid and tanh saturate (the kernel's expf would overflow unclamped: both
    gains reach it). Until stop 33 the kernel's tanh lost precision below 0 (1 - 2 / (1 + e^2x) near -1), and at
    a gain of 300 its gradients were 1e-2 off fp64 (ln_c.weight's 0.42), where autograd's fp32 ones are 1e-5; with
    the odd form they are within 1e-4, but for two small gradients (norms 5e-4 and 5e-6) at 7e-3 and 3e-3, which
    must then be within 1e-5 of the largest gradient's size."""
    cell, x, h0, c0, weights = problem(B=3, T=6, C=6, H=16)
    with torch.no_grad():
        cell.ln_ih.weight.fill_(gain)
        cell.ln_c.weight.fill_(gain)
    (want, want_grads) = run(autograd_loop, cell, x, h0, c0, weights)
    (got, got_grads) = run(lambda c, x, s: c.scan(x, s), cell, x, h0, c0, weights)
    for w, g in zip(want, got, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    scale = max(w.norm() for w in want_grads.values())
    for name, w in want_grads.items():
        assert torch.isfinite(got_grads[name]).all(), name
        close = relative(got_grads[name], w) < 1e-3  # large gains magnify rounding
        assert close or gain > 50 and (got_grads[name] - w).norm() < 1e-5 * scale, name
    for name in ("c0", "weight_ih", "weight_hh"):  # the old tanh had these 1e-2, 2e-4 and 3e-4 off at gain 300
        assert relative(got_grads[name], want_grads[name]) < 1e-4, name
