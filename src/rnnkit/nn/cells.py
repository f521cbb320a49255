"""Recurrent cells: one time step each.

Shape letters: B batch, C input features, H hidden units.

A cell maps ``(x_t, state) -> state'``; the state is a tensor ``h (B, H)`` for the Elman RNN and the GRU, and a
pair ``(h, c)`` for the LSTM. Parameter names and layouts are those of ``torch.nn.RNNCell/LSTMCell/GRUCell``
(``weight_ih (G*H, C)``, ``weight_hh (G*H, H)``, ``bias_ih (G*H)``, ``bias_hh (G*H)``, gates stacked in torch's
order), so weights load both ways.

Each step is split in two so the layer can hoist the input half out of its time loop:
``input_projection(x) = x W_ih^T + b_ih`` works on ``(B, C)`` or a whole sequence ``(B, T, C)``, and
``recur(gx_t, state)`` does the rest of one step. ``forward(x_t, state)`` is the two together.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError

State = Tensor | tuple[Tensor, Tensor]


class Cell(nn.Module, ABC):
    """Shared parameter set-up. ``gates`` is how many H-sized blocks the weights stack."""

    gates: int = 1
    fused_mode: str | None = None  # the torch.nn.RNNBase mode that computes the same thing, if any

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ConfigError(
                f"cell sizes must be positive (got input_size={input_size}, hidden_size={hidden_size})"
            )
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        g = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(g))
            self.bias_hh = nn.Parameter(torch.empty(g))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch.nn does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_projection(self, x: Tensor) -> Tensor:
        """``x W_ih^T + b_ih``: (B, C) -> (B, G*H) or (B, T, C) -> (B, T, G*H)."""
        return nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def hidden_projection(self, h: Tensor) -> Tensor:
        """``h W_hh^T + b_hh``: (B, H) -> (B, G*H)."""
        return nn.functional.linear(h, self.weight_hh, self.bias_hh)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        """The zero state."""
        return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

    @staticmethod
    def output(state: State) -> Tensor:
        """The part of the state the next layer sees: ``h``."""
        return state

    @abstractmethod
    def recur(self, gx: Tensor, state: State) -> State:
        """The rest of one step, given the projected input ``gx (B, G*H)``."""

    def forward(self, x: Tensor, state: State | None = None) -> State:
        """One step: ``x (B, C)``, ``state`` as ``init_state`` gives -> the next state."""
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        return self.recur(self.input_projection(x), state)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class RNNCell(Cell):
    """Elman RNN: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, act = tanh (default) or relu.

    Matches ``torch.nn.RNNCell(input_size, hidden_size, nonlinearity=...)``.
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"unknown nonlinearity {nonlinearity!r} — use 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity
        self.fused_mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"

    def recur(self, gx: Tensor, h: Tensor) -> Tensor:
        pre = gx + self.hidden_projection(h)
        return torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class LSTMCell(Cell):
    """Long short-term memory. Gates stacked i, f, g, o (torch's order):

    ``i = σ(W_ii x + b_ii + W_hi h + b_hi)``   input gate
    ``f = σ(W_if x + b_if + W_hf h + b_hf)``   forget gate
    ``g = tanh(W_ig x + b_ig + W_hg h + b_hg)`` candidate
    ``o = σ(W_io x + b_io + W_ho h + b_ho)``   output gate
    ``c' = f * c + i * g``;  ``h' = o * tanh(c')``

    The additive path through ``c`` is what keeps gradients from vanishing over long spans.
    Matches ``torch.nn.LSTMCell``; the state is ``(h, c)``, both (B, H).
    """

    gates = 4
    fused_mode = "LSTM"

    def init_state(self, batch_size: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        z = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return z, z.clone()

    @staticmethod
    def output(state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]

    def recur(self, gx: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, g, o = (gx + self.hidden_projection(h)).chunk(4, dim=-1)  # each (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class GRUCell(Cell):
    """Gated recurrent unit. Gates stacked r, z, n (torch's order):

    ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``          reset gate
    ``z = σ(W_iz x + b_iz + W_hz h + b_hz)``          update gate
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` candidate
    ``h' = (1 - z) * n + z * h``

    Matches ``torch.nn.GRUCell``.
    """

    gates = 3
    fused_mode = "GRU"

    def recur(self, gx: Tensor, h: Tensor) -> Tensor:
        xr, xz, xn = gx.chunk(3, dim=-1)  # each (B, H)
        hr, hz, hn = self.hidden_projection(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


CELL_TYPES = ("rnn", "rnn_tanh", "rnn_relu", "lstm", "gru")


def make_cell(kind: str, input_size: int, hidden_size: int, bias: bool = True) -> Cell:
    """Build a cell by name: rnn (= rnn_tanh), rnn_tanh, rnn_relu, lstm, gru."""
    if kind in ("rnn", "rnn_tanh"):
        return RNNCell(input_size, hidden_size, bias, "tanh")
    if kind == "rnn_relu":
        return RNNCell(input_size, hidden_size, bias, "relu")
    if kind == "lstm":
        return LSTMCell(input_size, hidden_size, bias)
    if kind == "gru":
        return GRUCell(input_size, hidden_size, bias)
    raise ConfigError(f"unknown cell {kind!r} — use one of {', '.join(CELL_TYPES)}")
