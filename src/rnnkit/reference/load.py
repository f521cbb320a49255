"""Weights from rnnkit (or torch.nn) modules into float64 NumPy dicts the reference functions take.

No torch import: tensors are converted through their own methods, and plain arrays pass through.
"""

from __future__ import annotations

import numpy as np

CELL_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def to_numpy(t) -> np.ndarray:
    """A float64 copy of a tensor (any device, any dtype) or an array."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.array(t, dtype=np.float64)


def params_from_cell(cell) -> dict[str, np.ndarray]:
    """``weight_ih``, ``weight_hh`` and, when the cell has them, ``bias_ih``, ``bias_hh``.

    Works for rnnkit.nn cells and torch.nn.RNNCell/LSTMCell/GRUCell, which name and lay them out the same way.
    """
    return {name: to_numpy(getattr(cell, name)) for name in CELL_NAMES if getattr(cell, name) is not None}


def params_from_language_model(model) -> dict[str, np.ndarray]:
    """The parameters of a one-layer rnnkit LanguageModel: its cell's, ``embedding`` (V, E) from
    ``model.embedding.weight``, and the head's ``weight_hy`` (V, H) and ``bias_y`` (V) from ``model.head``.

    Use with ``language_model_loss(model.config.cell, params, ...)``; compare with the model in eval mode
    (the reference has no dropout). With tied weights the model's gradient for the shared matrix is the sum
    of the reference's ``embedding`` and ``weight_hy`` gradients.
    """
    if model.rnn.num_layers != 1 or model.rnn.bidirectional:
        raise ValueError(
            f"the reference implements one unidirectional layer; this model has {model.rnn.num_layers} layers"
            " — build it with num_layers=1"
        )
    params = params_from_cell(model.rnn.cells[0])
    params["embedding"] = to_numpy(model.embedding.weight)
    params["weight_hy"] = to_numpy(model.head.weight)
    params["bias_y"] = to_numpy(model.head.bias)
    return params
