"""Recurrent cells: one time step each.

Shape letters: B batch, C input features, H hidden units.

A cell maps ``(x_t, state) -> state'``; the state is a tensor ``h (B, H)`` for the Elman RNN and the GRU, and a
pair ``(h, c)`` for the LSTM. Parameter names and layouts are those of ``torch.nn.RNNCell/LSTMCell/GRUCell``
(``weight_ih (G*H, C)``, ``weight_hh (G*H, H)``, ``bias_ih (G*H)``, ``bias_hh (G*H)``, gates stacked in torch's
order), so weights load both ways.

Each step is split in two so the layer can hoist the input half out of its time loop:
``input_projection(x) = x W_ih^T + b_ih`` works on ``(B, C)`` or a whole sequence ``(B, T, C)``, and
``step(gx_t, state)`` does the rest of one step: ``recur`` (the cell's equations) and then zoneout, if any.
``forward(x_t, state)`` is the two together.

Regularisers that no fused kernel has, so a cell using them runs on the layer's explicit path:
- ``zoneout`` (Krueger et al. 2017): in training each unit of the state keeps its previous value with this
  probability; at evaluation the state is that mixture's expectation, ``z * old + (1 - z) * new``.
- ``recurrent_dropout`` (Semeniuta et al. 2016, "without memory loss"): dropout on the candidate (``g`` of the
  LSTM, ``n`` of the GRU) at every step, so what is dropped is new input, never the memory itself.
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
    supports_recurrent_dropout: bool = False

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, zoneout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ConfigError(
                f"cell sizes must be positive (got input_size={input_size}, hidden_size={hidden_size})"
            )
        if not 0.0 <= zoneout < 1.0 or not 0.0 <= recurrent_dropout < 1.0:
            raise ConfigError(
                f"zoneout and recurrent_dropout must be in [0, 1) (got {zoneout} and {recurrent_dropout})"
            )
        if recurrent_dropout and not self.supports_recurrent_dropout:
            raise ConfigError(f"recurrent dropout applies to lstm and gru cells, not {type(self).__name__}")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.zoneout, self.recurrent_dropout = zoneout, recurrent_dropout
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
        """U(-1/sqrt(H), 1/sqrt(H)) for the weights and biases, as torch.nn does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)

    @property
    def fused_kernel(self) -> str | None:
        """The torch.nn mode that computes exactly this cell, or None (a regulariser on, or no such kernel)."""
        return None if self.zoneout or self.recurrent_dropout else self.fused_mode

    def step(self, gx: Tensor, state: State) -> State:
        """One step after the input projection: ``recur``, then zoneout."""
        new = self.recur(gx, state)
        z = self.zoneout
        if not z:
            return new
        if self.training:
            return map_pairs(lambda n, o: torch.where(torch.rand_like(n) < z, o, n), new, state)
        return map_pairs(lambda n, o: z * o + (1 - z) * n, new, state)

    def _candidate_dropout(self, candidate: Tensor) -> Tensor:
        if self.recurrent_dropout and self.training:
            return nn.functional.dropout(candidate, self.recurrent_dropout, training=True)
        return candidate

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

    def scan(self, x: Tensor, state: State) -> tuple[Tensor, State] | None:
        """The whole sequence ``x (B, T, C)`` from ``state`` at once, ``(y (B, T, H), state)``, where a cell has a
        faster way than stepping; None (the default) where it has not, and the layer loops over ``step``."""
        return None

    @abstractmethod
    def recur(self, gx: Tensor, state: State) -> State:
        """The rest of one step, given the projected input ``gx (B, G*H)``."""

    def forward(self, x: Tensor, state: State | None = None) -> State:
        """One step: ``x (B, C)``, ``state`` as ``init_state`` gives -> the next state."""
        if x.dim() != 2:
            raise ConfigError(f"a cell takes input of shape (B, C), got {tuple(x.shape)} — "
                              "add a batch dimension with x.unsqueeze(0)")
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        else:
            self.check_state(state, x.shape[0])
        return self.step(self.input_projection(x), state)

    def check_state(self, state: State, batch_size: int, lead: tuple[int, ...] = (), what: str = "a cell") -> None:
        """Raise ConfigError unless ``state`` has ``init_state(batch_size)``'s kind and shapes, each part with the
        leading dimensions ``lead`` (a layer's ``(L*D,)``): a state of the wrong batch size would otherwise
        broadcast against the batch, every row starting from the first row's state."""
        template = self.__dict__.get("_state_template")
        if template is None:  # one (1, ...) zero state on the meta device: its kind and per-row shapes
            template = self.init_state(1, device="meta")
            template = (isinstance(template, tuple),
                        [t.shape[1:] for t in (template if isinstance(template, tuple) else (template,))])
            self.__dict__["_state_template"] = template
        paired, rows = template
        parts = state if isinstance(state, tuple) else (state,)
        want = [(*lead, batch_size, *shape) for shape in rows]
        if (isinstance(state, tuple) != paired or len(parts) != len(want)
                or any(not isinstance(p, Tensor) or tuple(p.shape) != w for p, w in zip(parts, want, strict=True))):
            got = ", ".join(str(tuple(p.shape)) if isinstance(p, Tensor) else type(p).__name__ for p in parts)
            kind = f"a pair of tensors of shape {want[0]}" if paired else f"a tensor of shape {want[0]}"
            raise ConfigError(f"{what}'s state must be {kind} for a batch of {batch_size}, got {got} — pass the "
                              "state it returned for a batch of this size, or None for zeros")

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class RNNCell(Cell):
    """Elman RNN: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, act = tanh (default) or relu.

    Matches ``torch.nn.RNNCell(input_size, hidden_size, nonlinearity=...)``.
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 zoneout: float = 0.0, recurrent_dropout: float = 0.0):
        if nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"unknown nonlinearity {nonlinearity!r} — use 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, bias, zoneout, recurrent_dropout)
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
    supports_recurrent_dropout = True

    def init_state(self, batch_size: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        z = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return z, z.clone()

    @staticmethod
    def output(state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]

    def recur(self, gx: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, g, o = (gx + self.hidden_projection(h)).chunk(4, dim=-1)  # each (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * self._candidate_dropout(torch.tanh(g))
        h = torch.sigmoid(o) * torch.tanh(self.cell_norm(c))
        return h, c

    def cell_norm(self, c: Tensor) -> Tensor:
        """What ``tanh`` sees of the cell: ``c`` itself here; layer-normalised in LayerNormLSTMCell."""
        return c


class LayerNormLSTMCell(LSTMCell):
    """LSTM with layer normalisation (Ba, Kiros & Hinton 2016):

    ``[i, f, g, o] = LN(W_ih x) + b_ih + LN(W_hh h) + b_hh`` (each LN over the 4H gate pre-activations)
    ``c' = σ(f) * c + σ(i) * tanh(g)``;  ``h' = σ(o) * tanh(LN(c'))``

    Normalising each step's pre-activations keeps their scale steady over time, which tends to speed up and
    stabilise training. No fused kernel computes it: it runs on the explicit path. Parameters: those of the LSTM
    plus ``ln_ih``, ``ln_hh`` (4H) and ``ln_c`` (H) gains and offsets.
    """

    fused_mode = None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, zoneout: float = 0.0,
                 recurrent_dropout: float = 0.0):
        super().__init__(input_size, hidden_size, bias, zoneout, recurrent_dropout)
        self.ln_ih = nn.LayerNorm(4 * hidden_size)
        self.ln_hh = nn.LayerNorm(4 * hidden_size)
        self.ln_c = nn.LayerNorm(hidden_size)

    def input_projection(self, x: Tensor) -> Tensor:
        gx = self.ln_ih(nn.functional.linear(x, self.weight_ih))
        return gx if self.bias_ih is None else gx + self.bias_ih

    def hidden_projection(self, h: Tensor) -> Tensor:
        gh = self.ln_hh(nn.functional.linear(h, self.weight_hh))
        return gh if self.bias_hh is None else gh + self.bias_hh

    def cell_norm(self, c: Tensor) -> Tensor:
        return self.ln_c(c)

    def scan(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]] | None:
        """On the CPU in fp32 (bf16 autocast included), with no zoneout or recurrent dropout: the whole window
        through ``rnnkit.native.lnlstm`` (one matrix product and one compiled pointwise pass per step; a training
        step of the 2x512 model took 0.592 s against 0.858 s on autograd's loop, BENCHMARKS.md). None where it
        does not apply; the layer then loops over ``step``."""
        if self.zoneout or self.recurrent_dropout:
            return None
        from rnnkit.native import lnlstm  # the native layer loads (and may compile) only when it is used

        if not lnlstm.available(self.hidden_size, x, *state, self.weight_ih, self.weight_hh, self.ln_hh.weight,
                                self.ln_c.weight):
            return None
        # every constant added to a step's pre-activations in one vector, which the kernel adds in its pass
        shift = self.ln_hh.bias
        for bias in (self.bias_ih, self.bias_hh):
            shift = shift if bias is None else shift + bias
        gx = self.ln_ih(nn.functional.linear(x, self.weight_ih))  # the input half for all T steps, bias apart
        return lnlstm.scan(gx, state, self.weight_hh, self.ln_hh.weight, shift, self.ln_c.weight, self.ln_c.bias,
                           self.ln_hh.eps, self.ln_c.eps)


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
    supports_recurrent_dropout = True

    def recur(self, gx: Tensor, h: Tensor) -> Tensor:
        xr, xz, xn = gx.chunk(3, dim=-1)  # each (B, H)
        hr, hz, hn = self.hidden_projection(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = self._candidate_dropout(torch.tanh(xn + r * hn))
        return (1 - z) * n + z * h


CELL_TYPES = ("rnn", "rnn_tanh", "rnn_relu", "lstm", "gru", "lnlstm")


def make_cell(kind: str, input_size: int, hidden_size: int, bias: bool = True, zoneout: float = 0.0,
              recurrent_dropout: float = 0.0) -> Cell:
    """Build a cell by name: rnn (= rnn_tanh), rnn_tanh, rnn_relu, lstm, gru, lnlstm (layer-normalised LSTM)."""
    reg = {"zoneout": zoneout, "recurrent_dropout": recurrent_dropout}
    if kind in ("rnn", "rnn_tanh", "rnn_relu"):
        return RNNCell(input_size, hidden_size, bias, "relu" if kind == "rnn_relu" else "tanh", **reg)
    classes = {"lstm": LSTMCell, "gru": GRUCell, "lnlstm": LayerNormLSTMCell}
    if kind not in classes:
        raise ConfigError(f"unknown cell {kind!r} — use one of {', '.join(CELL_TYPES)}")
    return classes[kind](input_size, hidden_size, bias, **reg)


def map_pairs(fn, new: State, old: State) -> State:
    """``fn(new_part, old_part)`` over the tensors of a state (a tensor, or an LSTM's ``(h, c)``)."""
    if isinstance(new, tuple):
        return tuple(fn(n, o) for n, o in zip(new, old, strict=True))
    return fn(new, old)
