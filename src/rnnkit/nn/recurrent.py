"""The recurrent layer: a stack of cells looped over time, on torch's fused kernel when it can be.

Shape letters: B batch, T time, C input features, H hidden units, L layers, D directions (1 or 2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.errors import ConfigError
from rnnkit.nn.cells import Cell, State, make_cell

PATHS = ("auto", "fused", "explicit")
_FUSED_MODULES = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}


def _mode_kwargs(mode: str) -> dict:
    """The torch.nn keyword a fused mode implies: ``nonlinearity`` for RNN_TANH / RNN_RELU, nothing otherwise."""
    return {"nonlinearity": mode[4:].lower()} if mode.startswith("RNN_") else {}


def map_state(fn: Callable[..., Tensor], *states: State) -> State:
    """Apply ``fn`` to the tensors of one or more states of the same kind (a tensor, or an LSTM ``(h, c)``)."""
    if isinstance(states[0], tuple):
        return tuple(fn(*parts) for parts in zip(*states, strict=True))
    return fn(*states)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x (B, T, ...)`` within its own length; padding stays where it is."""
    if lengths is None:
        return x.flip(1)
    T = x.shape[1]
    t = torch.arange(T, device=x.device)
    lengths = lengths.to(x.device)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


class Recurrent(nn.Module):
    """A multi-layer, optionally bidirectional recurrent layer over any cell.

    ``forward(x (B, T, C), state=None, lengths=None) -> (y (B, T, D*H), state)``, where ``state`` is
    ``h (L*D, B, H)`` — or ``(h, c)`` for the LSTM — laid out as torch.nn.RNN/LSTM/GRU lay it out (index
    ``layer * D + direction``). ``lengths (B,)`` marks valid steps; outputs past a sequence's end are zero and
    its final state is the one at its last valid step, so padding never changes a result.

    ``path``: ``"auto"`` runs torch's fused kernel (oneDNN / cuDNN) whenever the cell has one, ``"fused"``
    insists on it, ``"explicit"`` loops over the cells in Python (the reference, and the path for cells with no
    fused kernel). Both paths share the same parameters, held by the cells.

    ``cell`` is a name (``rnn``, ``rnn_tanh``, ``rnn_relu``, ``lstm``, ``gru``) or a factory
    ``(input_size, hidden_size, bias) -> Cell``.
    """

    def __init__(
        self,
        cell: str | Callable[[int, int, bool], Cell],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        path: str = "auto",
        zoneout: float = 0.0,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if num_layers <= 0:
            raise ConfigError(f"num_layers must be positive (got {num_layers})")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1) (got {dropout})")
        if not 0.0 <= weight_drop < 1.0:
            raise ConfigError(f"weight_drop must be in [0, 1) (got {weight_drop})")
        self.weight_drop, self._dropping = weight_drop, False
        if path not in PATHS:
            raise ConfigError(f"unknown path {path!r} — use one of {', '.join(PATHS)}")
        if isinstance(cell, str):
            def factory(c, h, b):
                return make_cell(cell, c, h, b, zoneout, recurrent_dropout)
        elif zoneout or recurrent_dropout:
            raise ConfigError("zoneout and recurrent_dropout go with a cell name; a cell factory sets its own")
        else:
            factory = cell
        D = 2 if bidirectional else 1
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.num_directions, self.dropout, self.bias = bidirectional, D, dropout, bias
        self.cells = nn.ModuleList(
            factory(input_size if layer == 0 else D * hidden_size, hidden_size, bias)
            for layer in range(num_layers)
            for _ in range(D)
        )
        mode = self.cells[0].fused_kernel
        if path == "fused" and mode is None:
            what = type(self.cells[0]).__name__
            if self.cells[0].fused_mode is not None:
                what = "zoneout or recurrent dropout"
            raise ConfigError(f"{what} has no fused kernel — use path='auto' or 'explicit'")
        self.path = path
        # A parameterless torch.nn module whose forward we borrow (torch.func.functional_call) with the cells'
        # parameters. Kept out of the module tree so it adds nothing to state_dict().
        self._fused = None
        if mode is not None and path != "explicit":
            kwargs = _mode_kwargs(mode)
            template = _FUSED_MODULES[mode](
                input_size, hidden_size, num_layers, bias=bias, batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional, device="meta", **kwargs,
            )
            object.__setattr__(self, "_fused", template)

    @property
    def uses_fused(self) -> bool:
        return self._fused is not None

    # -- weights, both ways with torch.nn ------------------------------------------------------------------
    def torch_names(self) -> list[tuple[str, nn.Parameter]]:
        """``(torch.nn name, parameter)`` pairs: ``weight_ih_l0``, ..., ``bias_hh_l1_reverse``."""
        pairs = []
        for k, cell in enumerate(self.cells):
            layer, d = divmod(k, self.num_directions)
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                p = getattr(cell, name)
                if p is not None:
                    pairs.append((name + suffix, p))
        return pairs

    def torch_state_dict(self) -> dict[str, Tensor]:
        """The parameters under torch.nn.RNN/LSTM/GRU names, ready for ``module.load_state_dict``."""
        return {name: p.detach().clone() for name, p in self.torch_names()}

    @torch.no_grad()
    def load_torch_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Copy weights from a torch.nn.RNN/LSTM/GRU ``state_dict()`` (same configuration)."""
        pairs = self.torch_names()
        missing = sorted({n for n, _ in pairs} - set(state_dict))
        unexpected = sorted(set(state_dict) - {n for n, _ in pairs})
        if missing or unexpected:
            raise ConfigError(
                f"torch weights do not match this layer (missing {missing}, unexpected {unexpected}) — "
                "build the layer with the module's cell, sizes, num_layers, bidirectional and bias"
            )
        for name, p in pairs:
            if state_dict[name].shape != p.shape:
                raise ConfigError(f"{name} has shape {tuple(state_dict[name].shape)}, expected {tuple(p.shape)}")
            p.copy_(state_dict[name])

    def to_torch(self) -> nn.RNNBase:
        """A torch.nn.RNN/LSTM/GRU (batch_first) holding a copy of these weights."""
        mode = self.cells[0].fused_kernel
        if mode is None:
            what = type(self.cells[0]).__name__
            if self.cells[0].fused_mode is not None:
                what = "a layer with zoneout or recurrent dropout"  # both act at evaluation too (zoneout's mix)
            raise ConfigError(f"{what} has no torch.nn equivalent")
        kwargs = _mode_kwargs(mode)
        p = self.cells[0].weight_ih
        module = _FUSED_MODULES[mode](
            self.input_size, self.hidden_size, self.num_layers, bias=self.bias, batch_first=True,
            dropout=self.dropout if self.num_layers > 1 else 0.0, bidirectional=self.bidirectional,
            device=p.device, dtype=p.dtype, **kwargs,
        )
        module.load_state_dict(self.torch_state_dict())
        return module

    def torch_cells(self) -> list[nn.RNNCellBase] | None:
        """Copies of the cells as torch.nn.RNNCell/LSTMCell/GRUCell (one fused C++ op per step), or None when a cell
        has no torch equivalent. Unidirectional layers only."""
        mode = self.cells[0].fused_kernel
        if mode is None or self.bidirectional:
            return None
        out = []
        for cell in self.cells:
            p = cell.weight_ih
            kwargs = _mode_kwargs(mode)
            cls = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell}.get(mode, nn.RNNCell)
            torch_cell = cls(cell.input_size, cell.hidden_size, bias=cell.bias, device=p.device, dtype=p.dtype,
                             **kwargs)
            torch_cell.load_state_dict(cell.state_dict())
            out.append(torch_cell.eval())
        return out

    @classmethod
    def from_torch(cls, module: nn.RNNBase, path: str = "auto") -> Recurrent:
        """A layer with the configuration and a copy of the weights of a torch.nn.RNN/LSTM/GRU."""
        if getattr(module, "proj_size", 0):
            raise ConfigError("LSTM with proj_size has no rnnkit equivalent")
        cell = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}[module.mode]
        layer = cls(
            cell, module.input_size, module.hidden_size, module.num_layers, module.bidirectional,
            module.dropout, module.bias, path,
        )
        p = next(module.parameters())
        layer.to(device=p.device, dtype=p.dtype)
        layer.load_torch_state_dict(module.state_dict())
        return layer

    # -- state -----------------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        """The zero state: ``(L*D, B, H)``, or a pair of them for the LSTM."""
        p = self.cells[0].weight_ih
        per_cell = self.cells[0].init_state(batch_size, device or p.device, dtype or p.dtype)
        return map_state(lambda s: s.unsqueeze(0).repeat(len(self.cells), 1, 1), per_cell)

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """``x (B, T, C)`` -> ``(y (B, T, D*H), state)``; see the class docstring."""
        if isinstance(x, PackedSequence):
            raise ConfigError("Recurrent takes a padded (B, T, C) tensor with lengths=, not a PackedSequence — "
                              "pad_packed_sequence(x, batch_first=True) gives both")
        if x.dim() != 3:
            raise ConfigError(f"expected input of shape (B, T, C), got {tuple(x.shape)}")
        B, T, _ = x.shape
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long)
            if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
                raise ConfigError(f"lengths must hold B={B} values in [1, T={T}] (got {lengths.tolist()})")
            if int(lengths.min()) == T:
                lengths = None  # nothing is padded
        if state is None:
            state = self.init_state(B, x.device, x.dtype)
        else:
            self.cells[0].check_state(state, B, (len(self.cells),), "the layer")
        if self.weight_drop and self.training and not self._dropping:
            return self._forward_weight_dropped(x, state, lengths)
        if self._fused is not None:
            y, new = self._forward_fused(x, state, lengths)
        else:
            y, new = self._forward_explicit(x, state, lengths)
        # Under autocast, torch's fused LSTM and RNN, and the RNN cell's step, return the state in bf16/fp16; the
        # state leaves in the dtype it came in, so a state carried across TBPTT windows keeps one dtype.
        return y, map_state(lambda a, b: a.to(b.dtype), new, state)

    def _forward_weight_dropped(self, x: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
        """DropConnect on the recurrent weights (the weight drop of AWD-LSTM, Merity et al. 2018): one mask per
        call, shared by every step and every sequence of the batch, so either path runs as it would without it."""
        dropped = {f"cells.{k}.weight_hh": nn.functional.dropout(cell.weight_hh, self.weight_drop)
                   for k, cell in enumerate(self.cells)}
        self._dropping = True
        try:
            return functional_call(self, dropped, (x, state, lengths), strict=False)
        finally:
            self._dropping = False

    def _forward_fused(self, x: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
        template = self._fused
        template.train(self.training)  # inter-layer dropout follows our mode
        params = dict(self.torch_names())
        if lengths is None:
            y, new = functional_call(template, params, (x, state))
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, new = functional_call(template, params, (packed, state))
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])  # (B, T, D*H)
        return y, new

    def _forward_explicit(self, x: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
        D = self.num_directions
        mask = None
        if lengths is not None:
            mask = torch.arange(x.shape[1], device=x.device) < lengths.to(x.device)[:, None]  # (B, T)
            mask = mask.unsqueeze(-1)  # (B, T, 1)
            # Padded steps are computed and thrown away; zero them first so that whatever the padding holds
            # (even NaN or inf) can reach neither an output nor, through the backward pass, a gradient.
            x = x.masked_fill(~mask, 0.0)
        finals: list[State] = []
        for layer in range(self.num_layers):
            outputs = []
            for d in range(D):
                k = layer * D + d
                inp = x if d == 0 else reverse_padded(x, lengths)
                y, s = self._run_cell(self.cells[k], inp, map_state(lambda t, k=k: t[k], state), mask)
                outputs.append(y if d == 0 else reverse_padded(y, lengths))
                finals.append(s)
            x = outputs[0] if D == 1 else torch.cat(outputs, dim=-1)  # (B, T, D*H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        return x, map_state(lambda *s: torch.stack(s), *finals)

    @staticmethod
    def _run_cell(cell: Cell, x: Tensor, s: State, mask: Tensor | None) -> tuple[Tensor, State]:
        """Loop one cell over time. The input half of every step is computed at once, outside the loop."""
        if mask is None and (whole := cell.scan(x, s)) is not None:
            return whole
        # unbind, not gx[:, t]: each indexing op's backward would write a zero (B, T, G*H) gradient per step,
        # O(T^2) memory traffic; unbind's backward stacks the T slices once.
        gxs = cell.input_projection(x).unbind(1)  # T x (B, G*H)
        ys = []
        for t, gx in enumerate(gxs):
            new = cell.step(gx, s)
            if mask is None:
                s = new
                ys.append(cell.output(s))
            else:
                m = mask[:, t]  # (B, 1): steps past a sequence's end keep its state and output zero
                s = map_state(lambda a, b, m=m: torch.where(m, a, b), new, s)
                ys.append(torch.where(m, cell.output(new), 0.0))
        return torch.stack(ys, dim=1), s  # (B, T, H)

    @torch.no_grad()
    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One time step through every layer, for generation: ``x (B, C)`` -> ``(y (B, H), state)``.

        Steps the cells directly, so there is no per-call set-up of the fused kernel. Unidirectional only.
        """
        if self.bidirectional:
            raise ConfigError("a bidirectional layer cannot be stepped one token at a time")
        self.cells[0].check_state(state, x.shape[0], (len(self.cells),), "the layer")
        new = []
        for k, cell in enumerate(self.cells):
            s = cell.step(cell.input_projection(x), map_state(lambda t, k=k: t[k], state))
            new.append(s)
            x = cell.output(s)
        return x, map_state(lambda *s: torch.stack(s), *new)

    def extra_repr(self) -> str:
        path = "fused" if self.uses_fused else "explicit"
        return (
            f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, dropout={self.dropout}, "
            f"path={path}"
        )
