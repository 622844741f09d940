"""The plain (Elman) RNN: one tanh (or relu) layer repeated along the sequence.

    h_t = tanh(xp_t + hp_t) = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

It has no gates and no cell state, which is why it forgets across long gaps; it is the baseline
the LSTM improves on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import Cell, CellOptions, LayerParams
from lstmkit.cells.gates import RNN_GATES

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


def rnn_pointwise(xp: Tensor, hp: Tensor, nonlinearity: str = "tanh") -> Tensor:
    """xp, hp (B, H) -> h_t (B, H)."""
    return NONLINEARITIES[nonlinearity](xp + hp)


class RNNCellKind(Cell):
    name = "RNN"
    state_names = ("h",)

    def torch_mode(self, opts: CellOptions) -> str | None:
        return "RNN_TANH" if opts.nonlinearity == "tanh" else "RNN_RELU"

    def layout(self, opts: CellOptions) -> tuple[str, ...]:
        return RNN_GATES

    def trace_gates(self, opts: CellOptions) -> tuple[str, ...]:
        return RNN_GATES

    def step(
        self, xp: Tensor, hp: Tensor, state: tuple[Tensor, ...], p: LayerParams, opts: CellOptions
    ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        return (rnn_pointwise(xp, hp, opts.nonlinearity),), {}


RNN_CELL = RNNCellKind()  # the math object; lstmkit.RNN is the module
