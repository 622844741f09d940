"""The math of the cells: one small module per cell, one pointwise function per step, and the
registry that lists them (lstmkit.cells.registry)."""

from lstmkit.cells.base import (
    Cell,
    CellOptions,
    LayerParams,
    input_projection,
    recurrent_projection,
)
from lstmkit.cells.gates import GRU_GATES, LSTM_GATES, RNN_GATES
from lstmkit.cells.gru import GRU_CELL, gru_pointwise
from lstmkit.cells.lstm import LSTM_CELL, lstm_output, lstm_pointwise
from lstmkit.cells.registry import CELLS, cell_names, get_cell, register_cell
from lstmkit.cells.rnn import RNN_CELL, rnn_pointwise

for _cell in (LSTM_CELL, GRU_CELL, RNN_CELL):
    register_cell(_cell)

# The math objects were once named like the modules (lstmkit.cells.LSTM vs lstmkit.LSTM): the old
# names still resolve, with a DeprecationWarning.
_RENAMED = {"LSTM": "LSTM_CELL", "GRU": "GRU_CELL", "RNN": "RNN_CELL"}


def __getattr__(name: str):
    if name in _RENAMED:
        import warnings

        new = _RENAMED[name]
        warnings.warn(
            f"lstmkit.cells.{name} is now lstmkit.cells.{new} (the cell's math; lstmkit.{name} "
            f"is the layer)",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module 'lstmkit.cells' has no attribute {name!r}")


__all__ = [
    "CELLS",
    "Cell",
    "CellOptions",
    "GRU_CELL",
    "GRU_GATES",
    "LSTM_CELL",
    "LSTM_GATES",
    "LayerParams",
    "RNN_CELL",
    "RNN_GATES",
    "cell_names",
    "get_cell",
    "gru_pointwise",
    "input_projection",
    "lstm_output",
    "lstm_pointwise",
    "recurrent_projection",
    "register_cell",
    "rnn_pointwise",
]
