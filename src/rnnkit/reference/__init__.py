"""A NumPy reference for recurrent networks: the forward pass and backpropagation through time, by hand.

It serves two readers. Tests use it as an oracle: torch autograd on rnnkit's cells must give the same
gradients in float64. Students read it to see every gradient of an Elman RNN, an LSTM and a GRU written
out beside its equation. NumPy only; torch is never imported (the loaders in ``load.py`` only call methods
on the tensors they are given).

Shape letters: B batch, T time, C input features, H hidden units, V vocabulary (or outputs of the MSE
head). Weights use torch.nn's layouts, so ``x W^T`` is ``x @ W.T``. A gradient ``dX`` always means
``dL/dX`` and has the shape of ``X``.

Backpropagation through time (BPTT)
-----------------------------------
A recurrent network applies one step ``f`` with the same weights ``W`` at every time step::

    h_t = f(x_t, h_{t-1}; W)        t = 1 .. T, with h_0 given (zeros by default)
    y_t = h_t W_hy^T + b_y          a head reads every h_t (or only h_T)
    L   = mean over steps of loss(y_t, target_t)

Unrolled, this is a T-layer feed-forward network whose layers share ``W``; BPTT is ordinary backprop
through that unrolled network:

1. Forward: run the loop, keeping what each step computed (the *cache*).
2. Head: the loss at step t alone gives ``dhs[t] = dL/dh_t`` through the head (zero where a step has no
   loss, e.g. every step but the last for a many-to-one model).
3. Backward in time, t = T .. 1. ``h_t`` was used twice: by the head and by the next step, so its
   gradient is the sum ``dh = dhs[t] + dh_next``. Push ``dh`` back through one step's local derivatives
   to get the step's share of ``dW`` (added up over t, because every step uses the same ``W``), the input
   gradient ``dx_t``, and ``dh_next = dL/dh_{t-1}`` to carry one step further back.
4. After step 1, ``dh_next`` is ``dL/dh_0``: the gradient with respect to the initial state.

Each trip back through a step multiplies the carried gradient by ``W_hh^T`` and the derivative of the
nonlinearity, so over many steps it shrinks (vanishes) or grows (explodes). The LSTM also carries
``dc``, which goes back through ``c_t = f * c_{t-1} + i * g`` multiplied only by the forget gate ``f``:
the additive path that lets gradient travel far. Truncated BPTT runs all of this on windows of T steps,
carrying ``h`` forward across windows but not the gradient.

Files, in reading order: ``rnn.py``, ``lstm.py``, ``gru.py`` (``forward`` and ``backward`` over a whole
sequence for each cell), ``heads.py`` (cross-entropy, MSE, embedding), ``optim.py`` (SGD, Adam),
``model.py`` (a language model put together, and initial weights), ``load.py`` (weights from rnnkit).
"""

from rnnkit.reference import gru, heads, lstm, optim, rnn
from rnnkit.reference.load import params_from_cell, params_from_language_model
from rnnkit.reference.model import CELLS, LMResult, init_params, language_model_loss
from rnnkit.reference.optim import SGD, Adam

__all__ = [
    "CELLS", "SGD", "Adam", "LMResult", "gru", "heads", "init_params", "language_model_loss", "lstm", "optim",
    "params_from_cell", "params_from_language_model", "rnn",
]
