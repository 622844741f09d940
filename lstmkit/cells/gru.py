"""The GRU cell (Cho et al. 2014) in torch.nn.GRU's convention.

    r_t = sigmoid(xp_r + hp_r)                       reset gate
    z_t = sigmoid(xp_z + hp_z)                       update gate: how much of h_{t-1} to keep
    n_t = tanh(xp_n + r_t * hp_n)                    new content; r_t scales (W_hn h + b_hn)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Note the reset gate multiplies the whole recurrent term including b_hn (torch and cuDNN do this;
the original paper applies r before the matmul). With layer_norm, xp and hp are normalised first.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import Cell, CellOptions, LayerParams
from lstmkit.cells.gates import GRU_GATES, split


def gru_pointwise(xp: Tensor, hp: Tensor, h_prev: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """xp, hp (B, 3H), h_prev (B, H) -> h_t (B, H) and {r, z, n}."""
    x, h = split(xp, GRU_GATES), split(hp, GRU_GATES)
    r = torch.sigmoid(x["r"] + h["r"])
    z = torch.sigmoid(x["z"] + h["z"])
    n = torch.tanh(x["n"] + r * h["n"])
    h_new = (1.0 - z) * n + z * h_prev
    return h_new, {"r": r, "z": z, "n": n}


class GRUCellKind(Cell):
    name = "GRU"
    state_names = ("h",)

    def torch_mode(self, opts: CellOptions) -> str | None:
        return "GRU"

    def layout(self, opts: CellOptions) -> tuple[str, ...]:
        return GRU_GATES

    def trace_gates(self, opts: CellOptions) -> tuple[str, ...]:
        return GRU_GATES

    def step(
        self, xp: Tensor, hp: Tensor, state: tuple[Tensor, ...], p: LayerParams, opts: CellOptions
    ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        h, gates = gru_pointwise(xp, hp, state[0])
        return (h,), gates


GRU_CELL = GRUCellKind()  # the math object; lstmkit.GRU is the module
