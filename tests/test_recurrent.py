"""The recurrent layer against torch.nn on both paths: outputs, states and gradients; variable lengths; padding."""

from __future__ import annotations

import pytest
import torch
from recurrent_helpers import (
    CELLS,
    LENGTHS,
    PATHS,
    TORCH_CLASSES,
    B,
    C,
    H,
    T,
    as_tuple,
    assert_same,
    compare_with_torch,
    inputs,
    make,
    outputs_and_grads,
    random_state,
    reference_forward,
)
from torch.testing import assert_close

from rnnkit.errors import ConfigError
from rnnkit.nn.cells import Cell
from rnnkit.nn.recurrent import Recurrent


# -- against torch.nn ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(cell, path, num_layers, bidirectional):
    layer = make(cell, path, num_layers, bidirectional)
    assert layer.uses_fused == (path == "fused")
    ref = layer.to_torch()
    assert type(ref) is TORCH_CLASSES[cell] and ref.batch_first
    assert ref.num_layers == num_layers and ref.bidirectional == bidirectional
    compare_with_torch(layer, ref, inputs(), random_state(layer))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_without_bias(cell, path):
    layer = make(cell, path, 2, True, bias=False)
    ref = layer.to_torch()
    assert not ref.bias
    compare_with_torch(layer, ref, inputs(), random_state(layer))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_no_state_is_zero_state(cell, path):
    layer = make(cell, path, 2, True)
    zero = layer.init_state(B)
    for z in as_tuple(zero):
        assert z.shape == (4, B, H) and z.dtype == torch.float64 and not z.any()
    x = inputs()
    y, s = layer(x)
    y0, s0 = layer(x, zero)
    y_ref, s_ref = layer.to_torch()(x)
    assert_close(y, y0)
    assert_close(y, y_ref)
    for a, b, c in zip(as_tuple(s), as_tuple(s0), as_tuple(s_ref), strict=True):
        assert_close(a, b)
        assert_close(a, c)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_float32(cell, path):
    layer = Recurrent(cell, C, H, 2, True, path=path)
    x = torch.randn(B, T, C)
    y, s = layer(x, lengths=LENGTHS)
    y_ref, s_ref = reference_forward(layer.to_torch(), x, None, LENGTHS)
    assert y.dtype == torch.float32
    assert_close(y, y_ref)
    for a, b in zip(as_tuple(s), as_tuple(s_ref), strict=True):
        assert_close(a, b)


# -- variable lengths ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_match_packed_torch(cell, path, bidirectional):
    layer = make(cell, path, 2, bidirectional)
    compare_with_torch(layer, layer.to_torch(), inputs(), random_state(layer), torch.tensor(LENGTHS))


@pytest.mark.parametrize("path", PATHS)
def test_lengths_as_a_list(path):
    layer = make("lstm", path, 2, True)
    x = inputs()
    y, (h, c) = layer(x, lengths=LENGTHS)
    y2, (h2, c2) = layer(x, lengths=torch.tensor(LENGTHS))
    assert_close(y, y2)
    assert_close(h, h2)
    assert_close(c, c2)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_full_lengths_equal_no_lengths(cell, path):
    layer = make(cell, path, 2, True)
    x, state = inputs(), random_state(layer)
    assert_same(
        outputs_and_grads(layer, list(layer.parameters()), x, state, [T] * B),
        outputs_and_grads(layer, list(layer.parameters()), x, state, None),
    )


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_padding_never_changes_a_result(cell, path, bidirectional):
    layer = make(cell, path, 2, bidirectional)
    x, state = inputs(), random_state(layer)
    y, s = layer(x, state, lengths=LENGTHS)
    for i, n in enumerate(LENGTHS):
        alone_state = tuple(p[:, i : i + 1] for p in as_tuple(state))
        if not isinstance(state, tuple):
            alone_state = alone_state[0]
        alone_y, alone_s = layer(x[i : i + 1, :n], alone_state)
        assert_close(y[i : i + 1, :n], alone_y)
        for a, b in zip(as_tuple(s), as_tuple(alone_s), strict=True):
            assert_close(a[:, i : i + 1], b)
        pad = y[i, n:]
        assert torch.equal(pad, torch.zeros_like(pad)), "outputs past a sequence's end must be exactly zero"


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_padding_values_change_nothing(cell, path, bidirectional):
    layer = make(cell, path, 2, bidirectional)
    x, state = inputs(), random_state(layer)
    padded = torch.arange(T)[None, :] >= torch.tensor(LENGTHS)[:, None]  # (B, T)
    garbage = torch.where(padded[..., None], 10 * torch.randn(B, T, C, dtype=torch.float64), x.detach())
    garbage.requires_grad_(True)
    params = list(layer.parameters())
    y, s, g = outputs_and_grads(layer, params, x, state, LENGTHS)
    y2, s2, g2 = outputs_and_grads(layer, params, garbage, state, LENGTHS)
    assert_same((y, s, g), (y2, s2, g2))
    assert not g2[0][padded].any(), "padded inputs must get no gradient"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_non_finite_padding_changes_nothing(cell, path):
    """Padding from torch.empty may hold NaN or inf; it must not reach outputs, states or gradients."""
    layer = make(cell, path, 2, True)
    x, state = inputs(), random_state(layer)
    padded = torch.arange(T)[None, :] >= torch.tensor(LENGTHS)[:, None]
    garbage = x.detach().clone()
    garbage[padded] = float("nan")
    garbage[2, 4, 0] = float("inf")
    garbage.requires_grad_(True)
    params = list(layer.parameters())
    assert_same(
        outputs_and_grads(layer, params, x, state, LENGTHS),
        outputs_and_grads(layer, params, garbage, state, LENGTHS),
    )


# -- the two paths -------------------------------------------------------------------------------------------
SHORT = [2, 3, 1]  # no row fills the T steps: the output must still be (B, T, D*H), zero past step 3


@pytest.mark.parametrize("lengths", [None, LENGTHS, SHORT], ids=["full", "lengths", "all-short"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_equals_explicit(cell, bidirectional, lengths):
    fused = make(cell, "fused", 2, bidirectional)
    explicit = make(cell, "explicit", 2, bidirectional)
    explicit.load_torch_state_dict(fused.torch_state_dict())
    x, state = inputs(), random_state(fused)
    results = [outputs_and_grads(fused, list(fused.parameters()), x, state, lengths),
               outputs_and_grads(explicit, list(explicit.parameters()), x, state, lengths)]
    for y, _, _ in results:
        assert y.shape == (B, T, fused.num_directions * H)
        if lengths is not None:
            assert not y[:, max(lengths):].any()
    assert_same(*results)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", CELLS)
def test_bf16_autocast_state_keeps_its_dtype_on_both_paths(cell, lengths):
    """Under autocast torch's fused LSTM and RNN return a bf16 state; ours returns the dtype it was given (fp32),
    as the explicit path does, so a state carried across TBPTT windows does not change dtype with the path."""
    fused = make(cell, "fused", 2).float()
    explicit = make(cell, "explicit", 2).float()
    explicit.load_torch_state_dict(fused.torch_state_dict())
    x = inputs().float().detach()
    state = tuple(s.float().detach() for s in as_tuple(random_state(fused)))
    state = state if len(state) == 2 else state[0]
    results = []
    for layer in (fused, explicit):
        with torch.autocast("cpu", torch.bfloat16):
            y, new = layer(x, state, lengths)
        assert all(s.dtype == torch.float32 for s in as_tuple(new))
        results.append(as_tuple(new))
    for a, b in zip(*results, strict=True):
        assert_close(a, b, atol=0.05, rtol=0.05)  # bf16 arithmetic, same cell


def test_auto_uses_fused_for_builtin_cells():
    for cell in ("rnn", *CELLS):
        assert Recurrent(cell, C, H, path="auto").uses_fused
        assert Recurrent(cell, C, H).uses_fused
        assert not Recurrent(cell, C, H, path="explicit").uses_fused
        assert Recurrent(cell, C, H, path="fused").uses_fused


class HalfTanhCell(Cell):
    """``h' = tanh(W_ih x + b_ih + W_hh h + b_hh) / 2``: no torch.nn equivalent, so no fused kernel."""

    fused_mode = None

    def recur(self, gx, h):
        return torch.tanh(gx + self.hidden_projection(h)) / 2


def test_custom_cell_runs_explicit_under_auto():
    layer = Recurrent(HalfTanhCell, C, H, num_layers=2).double()
    assert not layer.uses_fused
    x = inputs()
    y, h = layer(x)
    assert y.shape == (B, T, H) and h.shape == (2, B, H)
    # the same thing by hand
    inp = x
    for k, cell in enumerate(layer.cells):
        s = torch.zeros(B, H, dtype=torch.float64)
        outs = []
        for t in range(T):
            pre = inp[:, t] @ cell.weight_ih.T + cell.bias_ih + s @ cell.weight_hh.T + cell.bias_hh
            s = torch.tanh(pre) / 2
            outs.append(s)
        inp = torch.stack(outs, dim=1)
        assert_close(h[k], s)
    assert_close(y, inp)


def test_custom_cell_with_lengths_and_both_directions():
    layer = Recurrent(HalfTanhCell, C, H, num_layers=2, bidirectional=True, path="auto").double()
    x = inputs()
    y, h = layer(x, lengths=LENGTHS)
    for i, n in enumerate(LENGTHS):
        alone_y, alone_h = layer(x[i : i + 1, :n])
        assert_close(y[i : i + 1, :n], alone_y)
        assert_close(h[:, i : i + 1], alone_h)
        assert not y[i, n:].any()


def test_custom_cell_refuses_fused_path():
    with pytest.raises(ConfigError, match="HalfTanhCell has no fused kernel.*'explicit'"):
        Recurrent(HalfTanhCell, C, H, path="fused")


def test_custom_cell_has_no_torch_equivalent():
    with pytest.raises(ConfigError, match="HalfTanhCell has no torch.nn equivalent"):
        Recurrent(HalfTanhCell, C, H).to_torch()


