"""rnnkit: recurrent neural networks — Elman RNN, LSTM and GRU — as a library and a command line, on PyTorch."""

__version__ = "0.1.0"

from rnnkit.errors import RnnkitError  # noqa: E402

__all__ = ["RnnkitError", "__version__"]
