"""LSTM, GRU and RNN: drop-in replacements for torch.nn's, plus the variants torch lacks.

Same constructor arguments, parameter names and shapes, and forward contract as torch.nn, so
`ours.load_state_dict(theirs.state_dict())` works both ways and gives the same results. Shapes
(L = num_layers, D = 2 if bidirectional else 1, H_out = proj_size or hidden_size):

    input   (T, B, input_size), (B, T, input_size) with batch_first, (T, input_size) unbatched,
            or a PackedSequence
    h_0     (L*D, B, H_out)      c_0 (L*D, B, hidden_size)  [LSTM]   (B omitted when unbatched)
    output  (T, B, D*H_out)      a PackedSequence if the input was one
    h_n     (L*D, B, H_out)      c_n (L*D, B, hidden_size)  [LSTM]

forward(input, hx=None, lengths=None, return_trace=False) -> (output, hx_n) or
(output, hx_n, trace). `lengths` (B,) is an alternative to packing: outputs past each length are
zero and final states are taken at each length. `trace` is a lstmkit.Trace.

Keyword-only extras (see README, "Beyond torch.nn"): forget_bias, peephole, coupled, layer_norm
(LSTM); recurrent_dropout, weight_drop, zoneout (all three cells); engine ("auto", "native",
"reference", ...).
"""

from __future__ import annotations

from lstmkit.cells import GRU_CELL, LSTM_CELL, RNN_CELL
from lstmkit.cells.registry import get_cell
from lstmkit.nn.base import RecurrentBase


class LSTM(RecurrentBase):
    """Multi-layer LSTM. Gate rows of weight_ih / weight_hh stacked i, f, g, o as torch.nn.LSTM.

    Extras: forget_bias (initial forget-gate bias, e.g. 1.0), peephole (Gers & Schmidhuber 2000),
    coupled (CIFG: i = 1 - f, no input-gate rows), layer_norm (Ba et al. 2016: LN on W_ih x, on
    W_hh h and on c before tanh), recurrent_dropout (variational, on h_{t-1}), weight_drop
    (DropConnect on W_hh), zoneout (a rate, or a (cell, hidden) pair).
    """

    cell = LSTM_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        forget_bias: float | None = None,
        peephole: bool = False,
        coupled: bool = False,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        engine: str = "auto",
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            forget_bias=forget_bias,
            peephole=peephole,
            coupled=coupled,
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
            engine=engine,
        )


class GRU(RecurrentBase):
    """Multi-layer GRU in torch.nn.GRU's convention (gate rows r, z, n).

    Extras: layer_norm (on W_ih x and W_hh h), recurrent_dropout, weight_drop, zoneout.
    """

    cell = GRU_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
        engine: str = "auto",
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
            engine=engine,
        )


class RNN(RecurrentBase):
    """Multi-layer Elman RNN with tanh or relu, as torch.nn.RNN: the baseline without gates.

    Extras: layer_norm (on W_ih x and W_hh h), recurrent_dropout, weight_drop, zoneout.
    """

    cell = RNN_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
        engine: str = "auto",
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            nonlinearity=nonlinearity,
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
            engine=engine,
        )


# The layer class of each registered cell, by lower-case cell name (lstmkit.cells.registry).
LAYERS: dict[str, type[RecurrentBase]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def layer_class(name: str) -> type[RecurrentBase]:
    """The layer for a registered cell ("lstm", "gru", "rnn", or one added with
    lstmkit.cells.register_cell, which gets a RecurrentBase subclass made for it: same
    constructor, forward, traces and engines as the built-in layers)."""
    cell = get_cell(name)
    key = cell.name.lower()
    if key not in LAYERS:
        doc = f"Multi-layer {cell.name} (lstmkit.nn.layer_class of a registered cell)."
        LAYERS[key] = type(cell.name, (RecurrentBase,), {"cell": cell, "__doc__": doc})
    return LAYERS[key]
