"""The layers: drop-in replacements for torch.nn's recurrent modules."""

from lstmkit.nn.cells import GRUCell, LSTMCell, RNNCell
from lstmkit.nn.layers import GRU, LSTM, RNN, layer_class

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "layer_class"]
