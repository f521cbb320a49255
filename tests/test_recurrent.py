"""The recurrent layer against torch.nn.RNN/LSTM/GRU in float64, on both paths: outputs, states, gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.testing import assert_close

from rnnkit.errors import ConfigError
from rnnkit.nn.cells import Cell
from rnnkit.nn.recurrent import Recurrent

B, T, C, H = 3, 5, 4, 6
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
PATHS = ("fused", "explicit")
LENGTHS = [T, 1, 3]  # a full row, a length-1 row and one in between
TORCH_CLASSES = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
DROPOUT_ONE_LAYER = "ignore:dropout option adds dropout after all but last recurrent layer"


def make(cell: str, path: str, num_layers: int = 1, bidirectional: bool = False, **kwargs) -> Recurrent:
    return Recurrent(cell, C, H, num_layers, bidirectional, path=path, **kwargs).double()


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def random_state(layer: Recurrent, batch: int = B):
    shape = (layer.num_layers * layer.num_directions, batch, H)
    parts = [torch.randn(shape, dtype=torch.float64, requires_grad=True)]
    if isinstance(layer.init_state(1), tuple):
        parts.append(torch.randn(shape, dtype=torch.float64, requires_grad=True))
        return tuple(parts)
    return parts[0]


def inputs(batch: int = B) -> torch.Tensor:
    return torch.randn(batch, T, C, dtype=torch.float64, requires_grad=True)


def total(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar that depends on every element, weighted so no gradient cancels by symmetry."""
    out = 0
    for t in tensors:
        w = torch.linspace(-1.0, 2.0, t.numel(), dtype=t.dtype).view_as(t)
        out = out + (w * t).sum() + (t**2).sum()
    return out


def reference_forward(ref: nn.RNNBase, x, state, lengths=None):
    """torch.nn's answer: packed when there are lengths, padded back to T."""
    if lengths is None:
        return ref(x, state)
    packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
    y, s = ref(packed, state)
    y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
    return y, s


def outputs_and_grads(module, params, x, state, lengths=None, forward=None):
    forward = forward or (lambda: module(x, state, lengths=lengths))
    y, s = forward()
    grads = torch.autograd.grad(total(y, *as_tuple(s)), [x, *as_tuple(state), *params])
    return y, as_tuple(s), grads


def assert_same(a, b):
    """Two (y, state parts, grads) triples agree."""
    ya, sa, ga = a
    yb, sb, gb = b
    assert_close(ya, yb)
    assert len(sa) == len(sb) and len(ga) == len(gb)
    for p, q in zip(sa, sb, strict=True):
        assert_close(p, q)
    for p, q in zip(ga, gb, strict=True):
        assert_close(p, q)


def compare_with_torch(layer: Recurrent, ref: nn.RNNBase, x, state, lengths=None):
    names = [n for n, _ in layer.torch_names()]
    ref_params = dict(ref.named_parameters())
    assert set(names) == set(ref_params)
    ours = outputs_and_grads(layer, [p for _, p in layer.torch_names()], x, state, lengths)
    theirs = outputs_and_grads(
        ref, [ref_params[n] for n in names], x, state,
        forward=lambda: reference_forward(ref, x, state, lengths),
    )
    assert ours[0].shape == (B, T, layer.num_directions * H)
    for s in ours[1]:
        assert s.shape == (layer.num_layers * layer.num_directions, B, H)
    assert ours[2][0].abs().sum() > 0  # the input gradient is exercised
    assert_same(ours, theirs)


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
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_equals_explicit(cell, bidirectional, lengths):
    fused = make(cell, "fused", 2, bidirectional)
    explicit = make(cell, "explicit", 2, bidirectional)
    explicit.load_torch_state_dict(fused.torch_state_dict())
    x, state = inputs(), random_state(fused)
    assert_same(
        outputs_and_grads(fused, list(fused.parameters()), x, state, lengths),
        outputs_and_grads(explicit, list(explicit.parameters()), x, state, lengths),
    )


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


# -- weights, both ways --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["auto", "explicit"])
@pytest.mark.parametrize(
    "module",
    [
        lambda: nn.LSTM(C, H, 2, batch_first=True, bidirectional=True),
        lambda: nn.GRU(C, H, 3, batch_first=True),
        lambda: nn.RNN(C, H, 2, batch_first=True, nonlinearity="relu", bias=False),
        lambda: nn.RNN(C, H, 1, batch_first=True, bidirectional=True),
    ],
    ids=["lstm", "gru", "rnn_relu", "rnn_tanh"],
)
def test_from_torch_reproduces_the_module(module, path):
    module = module().double()
    layer = Recurrent.from_torch(module, path=path)
    assert layer.uses_fused == (path == "auto")
    assert (layer.num_layers, layer.bidirectional, layer.bias) == (
        module.num_layers, module.bidirectional, module.bias,
    )
    assert next(layer.parameters()).dtype == torch.float64
    compare_with_torch(layer, module, inputs(), random_state(layer), torch.tensor(LENGTHS))


def test_from_torch_copies_the_weights():
    module = nn.GRU(C, H, 2, batch_first=True)
    layer = Recurrent.from_torch(module)
    with torch.no_grad():
        module.weight_hh_l1.add_(1)
    assert not torch.equal(layer.cells[1].weight_hh, module.weight_hh_l1)


def test_from_torch_refuses_projection():
    with pytest.raises(ConfigError, match="proj_size"):
        Recurrent.from_torch(nn.LSTM(C, H, proj_size=2))


@pytest.mark.parametrize("cell", CELLS)
def test_to_torch_reproduces_the_layer(cell):
    layer = make(cell, "explicit", 2, True)
    module = layer.to_torch()
    assert module.weight_ih_l1_reverse.dtype == torch.float64
    state = layer.torch_state_dict()
    for name, p in module.named_parameters():
        assert torch.equal(p, state[name])
        assert p.data_ptr() != dict(layer.torch_names())[name].data_ptr()  # a copy
    compare_with_torch(layer, module, inputs(), random_state(layer))


def test_torch_names_layout():
    layer = Recurrent("lstm", C, H, 2, True)
    names = dict(layer.torch_names())
    assert names["weight_ih_l0"] is layer.cells[0].weight_ih
    assert names["bias_hh_l0_reverse"] is layer.cells[1].bias_hh
    assert names["weight_ih_l1"] is layer.cells[2].weight_ih
    assert names["weight_hh_l1_reverse"] is layer.cells[3].weight_hh
    assert set(names) == set(dict(nn.LSTM(C, H, 2, bidirectional=True).named_parameters()))


def test_load_torch_state_dict_missing_names():
    layer = Recurrent("lstm", C, H, num_layers=2)
    with pytest.raises(ConfigError, match=r"missing \['bias_hh_l1'.*unexpected \[\].*num_layers"):
        layer.load_torch_state_dict(nn.LSTM(C, H, 1).state_dict())


def test_load_torch_state_dict_unexpected_names():
    layer = Recurrent("gru", C, H)
    with pytest.raises(ConfigError, match=r"missing \[\], unexpected \['bias_hh_l0_reverse'"):
        layer.load_torch_state_dict(nn.GRU(C, H, bidirectional=True).state_dict())


def test_load_torch_state_dict_without_bias():
    layer = Recurrent("rnn", C, H)
    with pytest.raises(ConfigError, match=r"missing \['bias_hh_l0', 'bias_ih_l0'\]"):
        layer.load_torch_state_dict(nn.RNN(C, H, bias=False).state_dict())


def test_load_torch_state_dict_wrong_shape():
    layer = Recurrent("lstm", C, H)
    with pytest.raises(ConfigError, match=r"weight_ih_l0 has shape \(18, 4\), expected \(24, 4\)"):
        layer.load_torch_state_dict(nn.GRU(C, H).state_dict())
    with pytest.raises(ConfigError, match=r"weight_ih_l0 has shape \(24, 7\), expected \(24, 4\)"):
        layer.load_torch_state_dict(nn.LSTM(7, H).state_dict())


# -- dropout between layers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_dropout_between_layers(cell, path):
    layer = make(cell, path, 2, dropout=0.5)
    x = inputs()
    layer.train()
    y_train, _ = layer(x)
    y_train2, _ = layer(x)
    layer.eval()
    y_eval, s_eval = layer(x)
    assert not torch.allclose(y_train, y_eval)
    assert not torch.allclose(y_train, y_train2)  # a fresh mask each call
    ref = layer.to_torch()
    assert ref.dropout == 0.5
    ref.eval()
    y_ref, s_ref = ref(x)
    assert_close(y_eval, y_ref)
    for a, b in zip(as_tuple(s_eval), as_tuple(s_ref), strict=True):
        assert_close(a, b)


@pytest.mark.filterwarnings(DROPOUT_ONE_LAYER)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_no_dropout_with_one_layer(cell, path):
    layer = make(cell, path, 1, True, dropout=0.5)
    x = inputs()
    layer.train()
    y_train, s_train = layer(x)
    layer.eval()
    y_eval, s_eval = layer(x)
    assert_close(y_train, y_eval)
    for a, b in zip(as_tuple(s_train), as_tuple(s_eval), strict=True):
        assert_close(a, b)


# -- stepping ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_step_equals_forward(cell, path):
    layer = make(cell, path, 3)
    x, state = inputs(), random_state(layer)
    y, s = layer(x, state)
    step_state = state
    for t in range(T):
        y_t, step_state = layer.step(x[:, t], step_state)
        assert y_t.shape == (B, H)
        assert_close(y_t, y[:, t])
    for a, b in zip(as_tuple(step_state), as_tuple(s), strict=True):
        assert_close(a, b)


def test_step_refuses_bidirectional():
    layer = Recurrent("gru", C, H, bidirectional=True)
    with pytest.raises(ConfigError, match="bidirectional"):
        layer.step(torch.randn(B, C), layer.init_state(B))


# -- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_input_must_be_3d(path):
    layer = Recurrent("lstm", C, H, path=path)
    with pytest.raises(ConfigError, match=r"expected input of shape \(B, T, C\), got \(5, 4\)"):
        layer(torch.randn(T, C))
    with pytest.raises(ConfigError, match="expected input of shape"):
        layer(torch.randn(1, B, T, C))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("lengths", [[T, 0, 3], [T, T + 1, 3], [T, 3], [[T], [1], [3]], [-1, 2, 3]])
def test_lengths_out_of_range_or_wrong_shape(path, lengths):
    layer = Recurrent("gru", C, H, path=path)
    with pytest.raises(ConfigError, match=rf"lengths must hold B={B} values in \[1, T={T}\]"):
        layer(torch.randn(B, T, C), lengths=lengths)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_layers": 0}, r"num_layers must be positive \(got 0\)"),
        ({"num_layers": -2}, r"num_layers must be positive"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\) \(got 1.0\)"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"path": "cudnn"}, r"unknown path 'cudnn' — use one of auto, fused, explicit"),
        ({"cell": "transformer"}, r"unknown cell 'transformer'"),
        ({"hidden_size": 0}, r"cell sizes must be positive"),
    ],
)
def test_bad_configuration(kwargs, message):
    args = {"cell": "lstm", "input_size": C, "hidden_size": H, **kwargs}
    with pytest.raises(ConfigError, match=message):
        Recurrent(**args)


# -- the module tree -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["auto", "fused", "explicit"])
def test_state_dict_holds_only_the_cells(path):
    layer = Recurrent("lstm", C, H, num_layers=2, bidirectional=True, path=path)
    expected = {f"cells.{k}.{n}" for k in range(4) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    assert set(layer.state_dict()) == expected
    assert len(layer.state_dict()) == len(expected)
    assert {n for n, _ in layer.named_parameters()} == expected
    assert len(list(layer.parameters())) == len(layer.torch_names()) == 16
    assert all(name in ("", "cells") or name.startswith("cells.") for name, _ in layer.named_modules())
    assert not any(t.is_meta for t in layer.state_dict().values())


@pytest.mark.parametrize("path", PATHS)
def test_deepcopy_is_independent(path):
    layer = make("lstm", path, 2, True)
    twin = copy.deepcopy(layer)
    x = inputs()
    assert_close(layer(x)[0], twin(x)[0])
    with torch.no_grad():
        twin.cells[0].weight_ih.add_(1)
    assert not torch.allclose(layer(x)[0], twin(x)[0])
    assert twin.uses_fused == layer.uses_fused


def test_state_dict_round_trip_across_paths():
    fused = Recurrent("gru", C, H, 2, True, path="fused").double()
    explicit = Recurrent("gru", C, H, 2, True, path="explicit").double()
    explicit.load_state_dict(fused.state_dict())
    x = inputs()
    assert_close(fused(x)[0], explicit(x)[0])
