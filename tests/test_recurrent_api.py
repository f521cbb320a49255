"""The recurrent layer's API: weights both ways with torch.nn, dropout between layers, stepping, errors, module tree."""

from __future__ import annotations

import copy

import pytest
import torch
from recurrent_helpers import (
    CELLS,
    DROPOUT_ONE_LAYER,
    LENGTHS,
    PATHS,
    B,
    C,
    H,
    T,
    as_tuple,
    compare_with_torch,
    inputs,
    make,
    random_state,
)
from torch import nn
from torch.testing import assert_close

from rnnkit.errors import ConfigError
from rnnkit.nn.recurrent import Recurrent, map_state


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


@pytest.mark.parametrize(
    "module",
    [
        lambda: nn.LSTM(C, H, 2, batch_first=True, dropout=0.3),
        lambda: nn.GRU(C, H, 3, batch_first=True, dropout=0.25, bidirectional=True, bias=False),
    ],
    ids=["lstm", "gru"],
)
def test_from_torch_keeps_the_whole_configuration(module):
    """Inter-layer dropout included: a converted layer that lost it would train differently from the module."""
    module = module()
    layer = Recurrent.from_torch(module)
    config = ("input_size", "hidden_size", "num_layers", "bidirectional", "bias", "dropout")
    assert [getattr(layer, k) for k in config] == [getattr(module, k) for k in config]
    back = layer.to_torch()
    assert [getattr(back, k) for k in config] == [getattr(module, k) for k in config]
    x = torch.randn(B, T, C)
    layer.train()
    assert not torch.allclose(layer(x)[0], layer(x)[0])  # the dropout acts in training


def test_torch_cells_are_for_unidirectional_layers_only():
    assert Recurrent("lstm", C, H, bidirectional=True).torch_cells() is None
    assert Recurrent("gru", C, H, 2, bidirectional=True).torch_cells() is None
    cells = Recurrent("lstm", C, H, 2).torch_cells()
    assert [type(c) for c in cells] == [nn.LSTMCell, nn.LSTMCell]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_init_state_gives_each_layer_its_own_storage(cell):
    """The zero state is (L*D, B, H), contiguous (cuDNN takes no strided hx), and one layer's part written in place
    leaves the others alone."""
    layer = Recurrent(cell, C, H, 2, bidirectional=True)
    state = layer.init_state(B)
    for part in as_tuple(state):
        assert part.shape == (4, B, H) and part.is_contiguous() and not part.any()
        part[0].add_(1)
        assert not part[1:].any()
        assert part[0].eq(1).all()


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


@pytest.mark.parametrize("path, cell", [(p, c) for p in PATHS for c in ("lstm", "gru", "lnlstm")
                                        if (p, c) != ("fused", "lnlstm")])  # the LN-LSTM has no fused kernel
def test_a_state_of_the_wrong_shape_is_refused_not_broadcast(path, cell):
    """On the explicit path a (L, 1, H) state, or a (B, H) one, would broadcast against the batch: every row would
    start from the first row's state. Every path refuses it, as torch's fused kernel does."""
    layer = Recurrent(cell, C, H, 2, path=path)
    x = torch.randn(B, T, C)
    good = layer.init_state(B)
    one_row = map_state(lambda s: s[:, :1], good)
    flat = map_state(lambda s: s[0], good)  # (B, H): a cell's state
    half = good[0] if isinstance(good, tuple) else (good, good)  # an LSTM given h alone, a GRU given a pair
    for bad in (one_row, flat, half):
        with pytest.raises(ConfigError, match=rf"the layer's state must be .* of shape \(2, {B}, {H}\)"):
            layer(x, bad)
        with pytest.raises(ConfigError, match="the layer's state must be"):
            layer.step(x[:, 0], bad)
    _, state = layer(x, good)
    layer(x, state)  # the state a layer returns is taken back


def test_packed_input_is_refused_with_the_way_to_pad_it():
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(2, 3, C), torch.tensor([3, 1]), batch_first=True)
    with pytest.raises(ConfigError, match="not a PackedSequence — pad_packed_sequence"):
        Recurrent("lstm", C, H)(packed)


@pytest.mark.parametrize("kwargs", [{"zoneout": 0.3}, {"recurrent_dropout": 0.2}])
def test_to_torch_refuses_what_torch_cannot_compute(kwargs):
    """Zoneout mixes old and new states at evaluation too: a plain torch module would compute something else."""
    layer = Recurrent("lstm", C, H, **kwargs)
    with pytest.raises(ConfigError, match="zoneout or recurrent dropout has no torch.nn equivalent"):
        layer.to_torch()


def test_to_torch_of_one_layer_with_dropout_is_quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns of dropout on a one-layer module
        module = Recurrent("gru", C, H, 1, dropout=0.3).to_torch()
    assert module.dropout == 0.0


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
