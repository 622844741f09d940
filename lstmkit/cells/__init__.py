"""The math of the cells: one small module per cell, one pointwise function per step."""

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
from lstmkit.cells.rnn import RNN, rnn_pointwise

CELLS: dict[str, Cell] = {c.name: c for c in (LSTM, GRU, RNN)}

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
    "gru_pointwise",
    "input_projection",
    "lstm_output",
    "lstm_pointwise",
    "recurrent_projection",
    "rnn_pointwise",
]
