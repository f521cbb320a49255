"""A layer-normalised LSTM layer's loop over one window, on ``lnlstm.c``: the training path for the CPU.

Shape letters: B batch, T time, H hidden size, G = 4H gate pre-activations.

``scan`` is an autograd function over the whole window. Each step is one torch matrix product and one call into
``lnlstm.c`` for everything pointwise; the backward pass runs the steps in reverse the same way and computes
W_hh's gradient as one product over the window, instead of T small ones. Through autograd the same step is ~30
separate ops forward and back (BENCHMARKS.md, "The layer-normalised LSTM, and the heap"). The caller keeps the
input half, ``LN_ih(x W_ih^T)`` for all T steps at once, on ordinary autograd; the biases travel in ``shift``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import Tensor

from rnnkit.native import library

MAX_HIDDEN = 1 << 16  # the backward kernel keeps three rows of H floats on its stack


def available(hidden_size: int, *tensors: Tensor) -> bool:
    """Whether ``scan`` can run: the kernels built, every tensor an fp32 one on the CPU, and H <= ``MAX_HIDDEN``."""
    return (hidden_size <= MAX_HIDDEN and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and library() is not None)


def matmul_dtype(device: torch.device) -> torch.dtype:
    """bf16 for the matrix products under bf16 autocast, as the rest of the model gets; fp32 otherwise."""
    on = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16
    return torch.bfloat16 if on else torch.float32


class _Pool:
    """Work buffers kept from one window to the next, by shape and dtype.

    A window's buffers are tens of MB each (T x B x 4H floats). Fresh ones come from the system as untouched
    pages, and the first write to each page faults: measured, that cost more than the step's arithmetic. Only
    buffers that never leave this module go back into the pool: those a forward pass saves, once the backward
    pass has used them (or at once, with no backward pass to come). A graph dropped without a backward pass
    takes its buffers with it to the garbage collector. At most ``LIMIT`` bytes are kept; the shapes used least
    recently go first (an epoch's short last window, a validation pass). Buffers made under
    ``torch.inference_mode`` (sampling, evaluation) are inference tensors, which may not be written outside it: they
    are kept apart and handed out only inside it.
    """

    LIMIT = 1 << 30

    def __init__(self) -> None:
        self.free: OrderedDict[tuple, list[Tensor]] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()  # a server may run two models' forward passes in two threads

    def take(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        key = (shape, dtype, torch.is_inference_mode_enabled())
        with self.lock:
            kept = self.free.get(key)
            if kept:
                self.free.move_to_end(key)
                t = kept.pop()
                self.bytes -= t.nbytes
                return t
        return torch.empty(shape, dtype=dtype)

    def give(self, *buffers: Tensor) -> None:
        with self.lock:
            for t in buffers:
                key = (tuple(t.shape), t.dtype, t.is_inference())
                kept = self.free.setdefault(key, [])
                self.free.move_to_end(key)
                if any(k.data_ptr() == t.data_ptr() for k in kept):
                    continue
                kept.append(t)
                self.bytes += t.nbytes
            while self.bytes > self.LIMIT:
                key, kept = next(iter(self.free.items()))
                self.bytes -= sum(k.nbytes for k in kept)
                del self.free[key]


_POOL = _Pool()


def _forward(gx, h0, c0, w_hh, params, eps_h, eps_c, mm_dtype, save):
    """The window's steps: ``(y, h, c)`` and, with ``save``, the buffers the backward pass reads (given back to the
    pool otherwise). ``params``: fp32 ``gamma_h, shift, gamma_c, beta_c``."""
    lib = library()
    B, T, G = gx.shape
    H = G // 4
    n = T if save else 1  # without a backward pass to come, one step's buffers serve every step
    bf = mm_dtype == torch.bfloat16
    take = _POOL.take
    with torch.autocast("cpu", enabled=False):
        gx = gx.float().contiguous()
        wt = w_hh.detach().to(mm_dtype).t()  # (H, G)
        hs = take(T + 1, B, H)
        hs[0] = h0
        hmm = take(T + 1, B, H, dtype=mm_dtype) if bf else hs  # the products' left operands
        if bf:
            hmm[0] = h0
        cs = take(T + 1, B, H)
        cs[0] = c0
        ahat, act, chat, th = take(n, B, G), take(n, B, G), take(n, B, H), take(n, B, H)
        rstd, rstd_c, a = take(n, B), take(n, B), take(B, G, dtype=mm_dtype)
        gp, sp, gcp, bcp = (p.data_ptr() for p in params)
        # addresses worked out here rather than by indexing tensors in the loop: at validation's small batches the
        # Python per step is a good part of the step
        step = _Addresses(B, H, saved=save)
        hsp, hmmp, csp, ap, gxp = hs.data_ptr(), hmm.data_ptr(), cs.data_ptr(), a.data_ptr(), gx.data_ptr()
        ahp, acp, chp, thp, rp, rcp = (b.data_ptr() for b in (ahat, act, chat, th, rstd, rstd_c))
        hmm_step = B * H * hmm.element_size()
        for t in range(T):
            g4, h4, r4 = step.at(t)
            torch.mm(hmm[t], wt, out=a)
            lib.rnnkit_lnlstm_forward(
                B, H, ap, bf, gxp + 4 * t * G, T * G, gp, sp, gcp, bcp, eps_h, eps_c,
                csp + 4 * t * B * H, ahp + g4, rp + r4, acp + g4, csp + 4 * (t + 1) * B * H, chp + h4, rcp + r4,
                thp + h4, hsp + 4 * (t + 1) * B * H, H, hmmp + (t + 1) * hmm_step if bf else None)
        # copies, never views of the pooled buffers: at B = 1 the transpose is already contiguous, and
        # .contiguous() would hand out hs itself for the next pass (or another thread) to overwrite
        out = hs[1:].transpose(0, 1).clone(memory_format=torch.contiguous_format), hs[T].clone(), cs[T].clone()
    buffers = (hmm, cs, ahat, act, chat, th, rstd, rstd_c)
    if save:
        _POOL.give(a, *([hs] if bf else []))
        return out, buffers
    _POOL.give(a, hs, *buffers)
    return out, None


class _Addresses:
    """Byte offsets of step t's rows in the (n, B, G), (n, B, H) and (n, B) fp32 buffers: n = T saved, else 1."""

    def __init__(self, B: int, H: int, saved: bool) -> None:
        self.B, self.H, self.saved = B, H, saved

    def at(self, t: int) -> tuple[int, int, int]:
        k = t if self.saved else 0
        return 16 * k * self.B * self.H, 4 * k * self.B * self.H, 4 * k * self.B


def _fp32(*tensors: Tensor) -> list[Tensor]:
    return [t.detach().float().contiguous() for t in tensors]


class _Scan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gx, h0, c0, w_hh, gamma_h, shift, gamma_c, beta_c, eps_h, eps_c, mm_dtype):
        params = _fp32(gamma_h, shift, gamma_c, beta_c)
        out, buffers = _forward(gx, h0, c0, w_hh, params, eps_h, eps_c, mm_dtype, save=True)
        ctx.save_for_backward(w_hh)
        ctx.gammas = params[0], params[2]
        ctx.buffers = buffers
        ctx.mm_dtype, ctx.gx_dtype = mm_dtype, gx.dtype
        return out

    @staticmethod
    def backward(ctx, dys, dhT, dcT):
        lib = library()
        (w_hh,) = ctx.saved_tensors
        gamma_h, gamma_c = ctx.gammas
        hmm, cs, ahat, act, chat, th, rstd, rstd_c = ctx.buffers
        mm, bf = ctx.mm_dtype, ctx.mm_dtype == torch.bfloat16
        T, B, G = act.shape
        H = G // 4
        f32 = {"dtype": torch.float32}
        with torch.autocast("cpu", enabled=False):
            w = w_hh.detach().to(mm)  # (G, H)
            dys = None if dys is None else dys.float().contiguous()
            dh = None if dhT is None else dhT.float().contiguous()
            dc = torch.zeros(B, H, **f32) if dcT is None else dcT.float().clone()
            dz = torch.empty(B, T, G, **f32)  # dL/dgx, handed to autograd: never pooled
            threads = lib.rnnkit_lnlstm_threads()  # each thread sums its rows' share into its own block
            da, sums = _POOL.take(T, B, G, dtype=mm), _POOL.take(T, threads, 2 * G + 2 * H)
            dh_next = torch.empty(B, H, dtype=mm)
            dh_bf = False
            step = _Addresses(B, H, saved=True)
            dyp = None if dys is None else dys.data_ptr()
            dhp = None if dh is None else dh.data_ptr()
            ahp, acp, chp, thp, rp, rcp, csp = (b.data_ptr() for b in (ahat, act, chat, th, rstd, rstd_c, cs))
            dcp, ghp, gcp, dzp, dap, smp = (b.data_ptr() for b in (dc, gamma_h, gamma_c, dz, da, sums))
            da_step, dh_next_p = B * G * da.element_size(), dh_next.data_ptr()
            for t in range(T - 1, -1, -1):
                g4, h4, r4 = step.at(t)
                lib.rnnkit_lnlstm_backward(
                    B, H, None if dyp is None else dyp + 4 * t * H, T * H, dhp, dh_bf, dcp, ghp, gcp,
                    ahp + g4, rp + r4, acp + g4, csp + h4, chp + h4, rcp + r4, thp + h4, dzp + 4 * t * G, T * G,
                    dap + t * da_step, bf, smp + 4 * t * threads * (2 * G + 2 * H), threads)
                torch.mm(da[t], w, out=dh_next)
                dhp, dh_bf = dh_next_p, bf
            d_w = torch.mm(da.view(T * B, G).t(), hmm[:T].reshape(T * B, H)).float()
            d_gamma_h, d_shift, d_gamma_c, d_beta_c = sums.sum((0, 1)).split((G, G, H, H))
        _POOL.give(da, sums, *ctx.buffers)
        del ctx.buffers
        d_h0 = dh_next.float() if T else (dh if dh is not None else torch.zeros(B, H, **f32))
        return (dz.to(ctx.gx_dtype), d_h0, dc, d_w, d_gamma_h, d_shift, d_gamma_c, d_beta_c, None, None, None)


def scan(gx: Tensor, state: tuple[Tensor, Tensor], w_hh: Tensor, gamma_h: Tensor, shift: Tensor, gamma_c: Tensor,
         beta_c: Tensor, eps_h: float, eps_c: float) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run the recurrent half of a layer-normalised LSTM over ``gx (B, T, G)`` from ``state = (h, c)``, each
    (B, H): ``(y (B, T, H), (h, c))``. ``shift (G)`` is added to every step's pre-activations: ``LN_hh``'s offset
    plus ``b_hh``, and ``b_ih`` too where ``gx`` leaves it out. Check ``available`` first."""
    args = gx, state[0], state[1], w_hh, gamma_h, shift, gamma_c, beta_c
    mm_dtype = matmul_dtype(gx.device)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args):
        ys, h, c = _Scan.apply(*args, eps_h, eps_c, mm_dtype)
    else:  # evaluation: nothing to save for a backward pass
        (ys, h, c), _ = _forward(*args[:4], _fp32(*args[4:]), eps_h, eps_c, mm_dtype, save=False)
    return ys, (h, c)
