"""The cells against torch.nn.RNNCell/LSTMCell/GRUCell, in float64: outputs and every gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from rnnkit.errors import ConfigError
from rnnkit.nn.cells import CELL_TYPES, Cell, GRUCell, LSTMCell, RNNCell, make_cell

B, C, H = 3, 4, 5
KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def reference(kind: str, bias: bool) -> nn.Module:
    if kind == "lstm":
        return nn.LSTMCell(C, H, bias=bias, dtype=torch.float64)
    if kind == "gru":
        return nn.GRUCell(C, H, bias=bias, dtype=torch.float64)
    return nn.RNNCell(C, H, bias=bias, nonlinearity=kind[4:], dtype=torch.float64)


def pair(kind: str, bias: bool = True) -> tuple[Cell, nn.Module]:
    """An rnnkit cell and a torch.nn cell holding a copy of its weights."""
    cell = make_cell(kind, C, H, bias).double()
    ref = reference(kind, bias)
    ref.load_state_dict(cell.state_dict())
    return cell, ref


def random_state(kind: str, batch: int = B, hidden: int = H):
    h = torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True)
    if kind == "lstm":
        return h, torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True)
    return h


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def total(state) -> torch.Tensor:
    """A scalar that depends on every output, with distinct weights so no gradient cancels by symmetry."""
    parts = as_tuple(state)
    w = torch.linspace(-1.0, 2.0, parts[0].numel(), dtype=parts[0].dtype).view_as(parts[0])
    return sum((w * p).sum() + (p**2).sum() for p in parts)


def test_cell_types_build_the_classes():
    assert isinstance(make_cell("rnn", C, H), RNNCell)
    assert make_cell("rnn", C, H).nonlinearity == "tanh"
    assert make_cell("rnn_relu", C, H).nonlinearity == "relu"
    assert isinstance(make_cell("lstm", C, H), LSTMCell)
    assert isinstance(make_cell("gru", C, H), GRUCell)
    assert set(KINDS) <= set(CELL_TYPES)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_cell(kind, bias):
    cell, ref = pair(kind, bias)
    assert {n for n, _ in cell.named_parameters()} == {n for n, _ in ref.named_parameters()}
    x = torch.randn(B, C, dtype=torch.float64, requires_grad=True)
    state = random_state(kind)

    ours = as_tuple(cell(x, state))
    theirs = as_tuple(ref(x, state))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == (B, H)
        assert_close(a, b)

    inputs = [x, *as_tuple(state)]
    names = PARAMS if bias else PARAMS[:2]
    ours_g = torch.autograd.grad(total(ours), inputs + [getattr(cell, n) for n in names])
    theirs_g = torch.autograd.grad(total(theirs), inputs + [getattr(ref, n) for n in names])
    for a, b in zip(ours_g, theirs_g, strict=True):
        assert a.abs().sum() > 0  # every gradient is exercised
        assert_close(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_no_bias_has_no_bias_parameters(kind):
    cell = make_cell(kind, C, H, bias=False)
    assert cell.bias_ih is None and cell.bias_hh is None
    assert {n for n, _ in cell.named_parameters()} == {"weight_ih", "weight_hh"}


@pytest.mark.parametrize("kind", KINDS)
def test_none_state_is_zero_state(kind):
    cell, ref = pair(kind)
    x = torch.randn(B, C, dtype=torch.float64)
    zero = cell.init_state(B, dtype=torch.float64)
    for z in as_tuple(zero):
        assert z.shape == (B, H) and z.dtype == torch.float64 and not z.any()
    for a, b, c in zip(as_tuple(cell(x)), as_tuple(cell(x, zero)), as_tuple(ref(x)), strict=True):
        assert_close(a, b, rtol=0, atol=0)
        assert_close(a, c)


def test_lstm_init_state_parts_are_distinct_tensors():
    h, c = make_cell("lstm", C, H).init_state(B)
    h.add_(1)
    assert not c.any()


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    cell = make_cell(kind, 3, 2).double()
    # keep relu pre-activations away from the kink, where finite differences disagree with autograd
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    state = random_state(kind, batch=2, hidden=2)
    params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    n_state = len(as_tuple(state))

    def fn(x, *rest):
        state_parts, weights = rest[:n_state], rest[n_state:]
        s = state_parts if kind == "lstm" else state_parts[0]
        out = torch.func.functional_call(cell, dict(zip(PARAMS, weights, strict=True)), (x, s))
        return as_tuple(out)

    if kind == "rnn_relu":
        with torch.no_grad():
            pre = cell.input_projection(x) + cell.hidden_projection(state)
        assert pre.abs().min() > 1e-3, "pick another seed: a pre-activation sits on relu's kink"
    assert torch.autograd.gradcheck(fn, (x, *as_tuple(state), *params))


@pytest.mark.parametrize("kind", KINDS)
def test_input_projection_over_a_sequence(kind):
    cell = make_cell(kind, C, H).double()
    T = 4
    x = torch.randn(B, T, C, dtype=torch.float64)
    gx = cell.input_projection(x)
    assert gx.shape == (B, T, cell.gates * H)
    for t in range(T):
        assert_close(gx[:, t], cell.input_projection(x[:, t]))
        assert_close(gx[:, t], x[:, t] @ cell.weight_ih.T + cell.bias_ih)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_is_projection_then_recur(kind):
    cell = make_cell(kind, C, H).double()
    x = torch.randn(B, C, dtype=torch.float64)
    state = random_state(kind)
    two_halves = cell.recur(cell.input_projection(x), state)
    for a, b in zip(as_tuple(cell(x, state)), as_tuple(two_halves), strict=True):
        assert_close(a, b, rtol=0, atol=0)


def test_output_is_h():
    h, c = torch.randn(B, H), torch.randn(B, H)
    assert LSTMCell.output((h, c)) is h
    assert GRUCell.output(h) is h
    assert RNNCell.output(h) is h


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sizes", [(0, 4), (4, 0), (-1, 4)])
def test_sizes_must_be_positive(kind, sizes):
    with pytest.raises(ConfigError, match="sizes must be positive"):
        make_cell(kind, *sizes)


def test_unknown_nonlinearity():
    with pytest.raises(ConfigError, match="unknown nonlinearity 'sigmoid'.*'tanh' or 'relu'"):
        RNNCell(C, H, nonlinearity="sigmoid")


def test_unknown_cell_name():
    with pytest.raises(ConfigError, match="unknown cell 'transformer'.*lstm"):
        make_cell("transformer", C, H)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        make_cell("LSTM", C, H)


def test_reset_parameters_uses_torch_bound():
    torch.manual_seed(0)
    cell = make_cell("lstm", 7, 16)
    bound = 1 / 16**0.5
    for p in cell.parameters():
        assert p.abs().max() <= bound
        assert p.std() > bound / 4  # filled, not left as torch.empty


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input_and_a_state_of_the_wrong_batch_are_refused(kind):
    """(C,) input would be read as a batch of C rows; a state for 1 row would broadcast over the batch."""
    cell = make_cell(kind, C, H).double()
    with pytest.raises(ConfigError, match=r"a cell takes input of shape \(B, C\), got \(4,\)"):
        cell(torch.randn(C, dtype=torch.float64))
    one_row = random_state(kind, batch=1)
    with pytest.raises(ConfigError, match=rf"a cell's state must be .* of shape \({B}, {H}\) for a batch of {B}"):
        cell(torch.randn(B, C, dtype=torch.float64), one_row)
    assert as_tuple(cell(torch.randn(B, C, dtype=torch.float64), random_state(kind)))[0].shape == (B, H)
