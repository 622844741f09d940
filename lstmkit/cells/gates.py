"""Gate layouts, defined once for the whole library.

The rows of `weight_ih` / `weight_hh` / biases are stacked gate by gate in these orders,
exactly as torch.nn does, so state dicts move between torch.nn and lstmkit unchanged:

    LSTM: i (input), f (forget), g (candidate, tanh), o (output)   -> 4 * hidden_size rows
    GRU:  r (reset), z (update), n (new, tanh)                     -> 3 * hidden_size rows
    RNN:  one block                                                -> 1 * hidden_size rows

The coupled input/forget LSTM (CIFG) has no input-gate rows: i = 1 - f, so its layout is
LSTM_GATES without "i". Peephole weights exist for the sigmoid gates only, in PEEPHOLE_GATES order.
"""

from __future__ import annotations

from torch import Tensor

LSTM_GATES: tuple[str, ...] = ("i", "f", "g", "o")
GRU_GATES: tuple[str, ...] = ("r", "z", "n")
RNN_GATES: tuple[str, ...] = ()  # a plain RNN has no gates: one tanh (or relu) block
PEEPHOLE_GATES: tuple[str, ...] = ("i", "f", "o")


def lstm_layout(coupled: bool) -> tuple[str, ...]:
    """Gate blocks that have weight rows, in storage order."""
    return tuple(g for g in LSTM_GATES if not (coupled and g == "i"))


def peephole_layout(coupled: bool) -> tuple[str, ...]:
    """Gates with a peephole weight vector, in storage order."""
    return tuple(g for g in PEEPHOLE_GATES if not (coupled and g == "i"))


def split(x: Tensor, layout: tuple[str, ...]) -> dict[str, Tensor]:
    """Split the last dimension of `x` (..., len(layout) * H) into named (..., H) blocks."""
    return dict(zip(layout, x.chunk(len(layout), dim=-1)))
