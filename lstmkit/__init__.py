"""lstmkit: exact, inspectable and fast LSTM / GRU / RNN layers for PyTorch.

import lstmkit
lstm = lstmkit.LSTM(10, 20, num_layers=2)           # same arguments as torch.nn.LSTM
out, (h, c), trace = lstm(x, return_trace=True)    # every gate at every step
out, (h, c) = lstm(x, intervention=lstmkit.Intervention.ablate(layer=1, units=[7]))  # causal
"""

from lstmkit.cells.gates import GRU_GATES, LSTM_GATES
from lstmkit.engines import ENGINES
from lstmkit.intervene import Intervention
from lstmkit.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from lstmkit.trace import Trace

__version__ = "0.1.0"

__all__ = [
    "ENGINES",
    "GRU",
    "GRUCell",
    "GRU_GATES",
    "Intervention",
    "LSTM",
    "LSTMCell",
    "LSTM_GATES",
    "RNN",
    "RNNCell",
    "Trace",
    "__version__",
]
