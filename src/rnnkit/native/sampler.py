"""``NativeLSTM``: an LSTM language model's weights laid out for ``lstm.c``, and its step and sampling loop.

Shape letters: B rows sampled together, L layers, H hidden size, V vocabulary size.
"""

from __future__ import annotations

import ctypes
import weakref

import torch
from torch import Tensor, nn

from rnnkit.native import MAX_LAYERS, library

_f32p, _i64p = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64)


class _Model(ctypes.Structure):
    _fields_ = [
        ("layers", ctypes.c_int64), ("hidden", ctypes.c_int64), ("vocab", ctypes.c_int64), ("int8", ctypes.c_int64),
        ("table", ctypes.c_void_p),
        ("w", ctypes.c_void_p * MAX_LAYERS),
        ("scale", ctypes.c_void_p * MAX_LAYERS),
        ("rowsum", ctypes.c_void_p * MAX_LAYERS),
        ("bias", ctypes.c_void_p * MAX_LAYERS),
        ("head_w", ctypes.c_void_p), ("head_b", ctypes.c_void_p),
        ("ln", ctypes.c_int64),
        ("w_in", ctypes.c_void_p * MAX_LAYERS),
        ("scale_in", ctypes.c_void_p * MAX_LAYERS),
        ("rowsum_in", ctypes.c_void_p * MAX_LAYERS),
        *((name, ctypes.c_void_p * MAX_LAYERS) for name in ("ln_in_g", "ln_in_b", "ln_h_g", "ln_c_g", "ln_c_b")),
        ("eps_in", ctypes.c_float), ("eps_h", ctypes.c_float), ("eps_c", ctypes.c_float),
    ]


def _ptr(t: Tensor, kind=ctypes.c_void_p):
    return ctypes.cast(t.data_ptr(), kind)


def quantize_rows(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``w (N, K)`` -> int8 ``q``, ``scale (N)``, ``rowsum (N)`` int32, with ``w ≈ scale[:, None] * q``:
    one symmetric scale per row, q in [-127, 127]."""
    scale = w.abs().amax(1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.float().contiguous(), q.sum(1, dtype=torch.int32).contiguous()


_built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {int8: (fingerprint, NativeLSTM)}
MAX_HIDDEN = 32767  # int8 dot products of 2H terms, each up to 255 * 127, stay inside int32


def _fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter is replaced or written: in place through autograd's view of it (an optimizer
    step, load_state_dict: the version counter), or behind it (``p.data``, NumPy: the sum)."""
    params = list(model.parameters())
    with torch.no_grad():
        sums = torch.stack([p.detach().sum(dtype=torch.float64) for p in params]).tolist() if params else []
    return tuple((p.data_ptr(), p._version) for p in params), tuple(sums)


def _layer_normed(cell: nn.Module) -> bool:
    """An ``rnnkit.nn.cells.LayerNormLSTMCell`` (told by its parts: this layer sits below ``rnnkit.nn``)."""
    return all(isinstance(getattr(cell, name, None), nn.LayerNorm) for name in ("ln_ih", "ln_hh", "ln_c"))


def _mismatch(embedding: Tensor, cells: list, head_w: Tensor, head_b: Tensor | None) -> str | None:
    """What makes these weights unfit for lstm.c, or None: the kernels index by these sizes without checking."""
    V, E = embedding.shape
    ln = bool(cells) and all(_layer_normed(c) for c in cells)
    if not cells or len(cells) > MAX_LAYERS or not (ln or all(isinstance(c, nn.LSTMCell) for c in cells)):
        return f"1 to {MAX_LAYERS} torch.nn.LSTMCell or rnnkit LayerNormLSTMCell layers are needed"
    if ln:
        if any(c.zoneout or c.recurrent_dropout for c in cells):
            return "zoneout and recurrent dropout change the cell's step"
        if len({(c.ln_ih.eps, c.ln_hh.eps, c.ln_c.eps) for c in cells}) > 1:
            return "the layers' layer norms have different eps"
    H = cells[0].hidden_size
    if H > MAX_HIDDEN:
        return f"hidden size {H} is above {MAX_HIDDEN}"
    sizes = [(c.input_size, c.hidden_size) for c in cells]
    if sizes != [(E, H)] + [(H, H)] * (len(cells) - 1):
        return f"layer sizes {sizes} do not chain from embedding size {E} at hidden size {H}"
    if tuple(head_w.shape) != (V, H) or (head_b is not None and tuple(head_b.shape) != (V,)):
        return f"the head must map {H} to the {V} tokens of the embedding (got {tuple(head_w.shape)})"
    return None


class NativeLSTM:
    """Embedding -> LSTM layers -> linear head, stepped by ``lstm.c`` (fp32, or int8 weights with ``int8``).

    Layer 0's input product is folded into a (V, 4H) table (embedding @ W_ih^T + biases), so a step reads it by
    token; every later layer multiplies [input | state] by one [W_ih | W_hh] matrix. Layer-normalised LSTM cells
    (``rnnkit.nn.cells.LayerNormLSTMCell``) keep W_ih and W_hh apart, since each product is normalised on its
    own; their table holds the normalised input half. The head stays fp32. Holds copies of the weights: build
    it after training. CPU, fp32 models only.
    """

    def __init__(self, embedding: Tensor, cells: list[nn.Module], head_w: Tensor, head_b: Tensor | None,
                 int8: bool = False):
        lib = library()
        if lib is None:
            raise RuntimeError("the native kernels are unavailable")
        problem = _mismatch(embedding, cells, head_w, head_b)
        if problem:
            raise ValueError(problem)
        self.lib, self.int8 = lib, int8
        self.layers, self.hidden, self.vocab = len(cells), cells[0].hidden_size, embedding.shape[0]
        self.layer_normed = ln = _layer_normed(cells[0])
        H = self.hidden
        keep = []  # every tensor the struct points at, kept alive with it

        def pointer(t: Tensor):
            t = t.detach().float().contiguous().clone()
            keep.append(t)
            return _ptr(t)

        def matrix(w: Tensor) -> tuple:
            """(weights, row scales, row sums) pointers: int8 with ``int8``, else fp32 (no scales or sums)."""
            if not int8:
                return pointer(w), None, None
            q, scale, rowsum = quantize_rows(w.detach().float())
            keep.extend((q, scale, rowsum))
            return _ptr(q), _ptr(scale), _ptr(rowsum)

        def bias(cell):
            zero = torch.zeros(4 * H)
            total = (cell.bias_ih if cell.bias_ih is not None else zero) + (
                cell.bias_hh if cell.bias_hh is not None else zero)
            return total + cell.ln_hh.bias if ln else total  # LN_hh's offset is a constant of the step too

        with torch.no_grad():
            c0 = cells[0]
            x0 = embedding.float() @ c0.weight_ih.float().T
            table = (c0.ln_ih(x0) if ln else x0) + bias(c0)
            m = _Model(layers=self.layers, hidden=H, vocab=self.vocab, int8=int(int8), table=pointer(table),
                       ln=int(ln))
            for i, cell in enumerate(cells):
                w = cell.weight_hh if i == 0 or ln else torch.cat([cell.weight_ih, cell.weight_hh], 1)
                m.w[i], m.scale[i], m.rowsum[i] = matrix(w)
                if i > 0:
                    m.bias[i] = pointer(bias(cell))
                if ln:
                    if i > 0:
                        m.w_in[i], m.scale_in[i], m.rowsum_in[i] = matrix(cell.weight_ih)
                        m.ln_in_g[i], m.ln_in_b[i] = pointer(cell.ln_ih.weight), pointer(cell.ln_ih.bias)
                    m.ln_h_g[i] = pointer(cell.ln_hh.weight)
                    m.ln_c_g[i], m.ln_c_b[i] = pointer(cell.ln_c.weight), pointer(cell.ln_c.bias)
            if ln:
                m.eps_in, m.eps_h, m.eps_c = c0.ln_ih.eps, c0.ln_hh.eps, c0.ln_c.eps
            m.head_w = pointer(head_w)
            m.head_b = pointer(head_b if head_b is not None else torch.zeros(self.vocab))
        self._model, self._keep = m, keep

    @classmethod
    def for_model(cls, model: nn.Module, int8: bool = False) -> NativeLSTM | None:
        """For a CPU fp32 model with ``embedding``, an LSTM ``rnn`` (unidirectional; torch-equivalent cells or
        layer-normalised ones) and ``head``; None where the model is not one, or the kernels are unavailable. The
        answer is kept per model while its weights are unchanged (so a server's requests skip the copy and the
        quantisation)."""
        rnn, head, emb = getattr(model, "rnn", None), getattr(model, "head", None), getattr(model, "embedding", None)
        if rnn is None or not hasattr(rnn, "torch_cells") or not isinstance(head, nn.Linear) or emb is None:
            return None
        p = next(model.parameters())
        if p.device.type != "cpu" or p.dtype != torch.float32 or library() is None:
            return None
        fingerprint = _fingerprint(model)
        known = _built.get(model, {})
        if int8 in known and known[int8][0] == fingerprint:
            return known[int8][1]
        with torch.random.fork_rng(devices=[]):  # building nn.LSTMCells draws from the global RNG
            cells = rnn.torch_cells()
        if cells is None and not getattr(rnn, "bidirectional", True):
            cells = list(rnn.cells)  # layer-normalised LSTM cells are taken as they are (_mismatch checks)
        ok = cells is not None and not _mismatch(emb.weight, cells, head.weight, head.bias)
        kernels = cls(emb.weight.detach(), cells, head.weight.detach(), head.bias, int8) if ok else None
        _built.setdefault(model, {})[int8] = (fingerprint, kernels)
        return kernels

    def state(self, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """The model's LSTM state ``(h, c)``, each (L, B, H), as the fp32 contiguous copies the kernel updates."""
        return tuple(s.detach().float().contiguous().clone() for s in state)

    def _check(self, tokens: Tensor, state: tuple[Tensor, Tensor]) -> Tensor:
        """The kernels trust their pointers: every shape, dtype, device and layout is checked here."""
        if tokens.device.type != "cpu":
            raise ValueError("tokens must be on the CPU")
        tokens = tokens.to(torch.int64).contiguous()
        shape = (self.layers, tokens.shape[0], self.hidden)
        if tokens.dim() != 1 or any(s.shape != shape or s.dtype != torch.float32 or s.device.type != "cpu"
                                    or not s.is_contiguous() for s in state):
            raise ValueError(f"expected tokens (B,) and a state from state(): h and c fp32 contiguous {shape}")
        return tokens

    @staticmethod
    def _raise(code: int, tokens: Tensor) -> None:
        if code == 2:
            raise IndexError(f"token ids must be in [0, vocabulary size) (got {tokens.tolist()})")
        if code:
            raise MemoryError("the native LSTM kernels could not allocate their scratch")

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor]) -> Tensor:
        """``tokens (B,)`` -> ``logits (B, V)``; ``state`` (from ``state()``) advances in place."""
        tokens = self._check(tokens, state)
        h, c = state
        B = tokens.shape[0]
        logits = torch.empty(B, self.vocab)
        self._raise(self.lib.rnnkit_lstm_step(ctypes.byref(self._model), _ptr(tokens, _i64p), ctypes.c_int64(B),
                                              _ptr(h, _f32p), _ptr(c, _f32p), _ptr(logits, _f32p)), tokens)
        return logits

    def generate(self, tokens: Tensor, state: tuple[Tensor, Tensor], uniform: Tensor, temperature: float,
                 top_k: int | None, top_p: float | None) -> Tensor:
        """From ``tokens (B,)``, already sampled: step and sample ``n`` more, drawing with ``uniform (n, B)`` in
        [0, 1); returns ``(n, B)`` ids. ``state`` advances in place."""
        tokens = self._check(tokens, state)
        h, c = state
        n, B = uniform.shape
        if B != tokens.shape[0] or uniform.device.type != "cpu":
            raise ValueError(f"uniform must be (n, {tokens.shape[0]}) on the CPU (got {tuple(uniform.shape)} on "
                             f"{uniform.device.type})")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (got {temperature})")
        uniform = uniform.float().contiguous()
        out = torch.empty(n, B, dtype=torch.int64)
        logits = torch.empty(B, self.vocab)
        self._raise(self.lib.rnnkit_lstm_generate(
            ctypes.byref(self._model), _ptr(tokens, _i64p), ctypes.c_int64(B), _ptr(h, _f32p), _ptr(c, _f32p),
            ctypes.c_int64(n), _ptr(uniform, _f32p), ctypes.c_float(temperature), ctypes.c_int64(top_k or 0),
            ctypes.c_float(top_p if top_p is not None else 1.0), _ptr(out, _i64p), _ptr(logits, _f32p)), tokens)
        return out
