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
from lstmkit.cells.gru import GRU, gru_pointwise
from lstmkit.cells.lstm import LSTM, lstm_output, lstm_pointwise
from lstmkit.cells.registry import CELLS, cell_names, get_cell, register_cell
from lstmkit.cells.rnn import RNN, rnn_pointwise

for _cell in (LSTM, GRU, RNN):
    register_cell(_cell)

__all__ = [
    "CELLS",
    "Cell",
    "CellOptions",
    "GRU",
    "GRU_GATES",
    "LSTM",
    "LSTM_GATES",
    "LayerParams",
    "RNN",
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
