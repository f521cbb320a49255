"""Cells (one time step) and the recurrent layer that loops them."""

from rnnkit.nn.cells import CELL_TYPES, Cell, GRUCell, LSTMCell, RNNCell, make_cell
from rnnkit.nn.recurrent import Recurrent, map_state

__all__ = ["CELL_TYPES", "Cell", "GRUCell", "LSTMCell", "RNNCell", "Recurrent", "make_cell", "map_state"]
