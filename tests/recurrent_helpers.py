"""Helpers shared by the recurrent-layer tests: small sizes, builders, and comparison against torch.nn."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.testing import assert_close

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
