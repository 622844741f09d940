"""What every cell shares: its parameters for one layer and direction, and the two projections.

A recurrent step is split the way the equations are written:

    xp_t = LN_ih(W_ih x_t) + b_ih          input projection, for all t at once   (T, B, G*H)
    hp_t = LN_hh(W_hh h_{t-1}) + b_hh      recurrent projection, once per step   (B, G*H)
    state_t, gates_t = cell.step(xp_t, hp_t, state_{t-1})                        pointwise

G is the number of gate blocks (4 for LSTM, 3 for GRU, 1 for RNN), H is hidden_size. LN_* is the
optional layer norm (gain only: its shift would duplicate the bias); without layer_norm it is the
identity. Engines call these functions so that the math lives in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

LN_EPS = 1e-5


@dataclass
class LayerParams:
    """Parameters of one layer and direction (shapes for input width I, H hidden, P proj, G gates).

    w_ih (G*H, I), w_hh (G*H, H_out), b_ih / b_hh (G*H) or None, w_hr (P, H) or None;
    w_peep (len(peephole gates)*H) or None; ln_ih / ln_hh (G*H) layer-norm gains or None;
    ln_c_w / ln_c_b (H) layer norm on the LSTM cell before its tanh, or None.
    H_out is P when a projection is used, else H.
    """

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None = None
    b_hh: Tensor | None = None
    w_hr: Tensor | None = None
    w_peep: Tensor | None = None
    ln_ih: Tensor | None = None
    ln_hh: Tensor | None = None
    ln_c_w: Tensor | None = None
    ln_c_b: Tensor | None = None


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None = None) -> Tensor:
    """Layer norm over the last dimension, with a gain (and optional shift). The width comes from
    the gain's shape, a constant under tracing (x.shape[-1] would be traced as a dynamic size,
    which ONNX export with dynamic axes cannot take)."""
    width = weight.shape[-1] if weight is not None else x.shape[-1]
    return F.layer_norm(x, (width,), weight, bias, LN_EPS)


def input_projection(x: Tensor, p: LayerParams) -> Tensor:
    """(..., I) -> (..., G*H): LN_ih(W_ih x) + b_ih. One matmul for every time step at once."""
    if p.ln_ih is None:
        return F.linear(x, p.w_ih, p.b_ih)
    xp = layer_norm(F.linear(x, p.w_ih), p.ln_ih)
    return xp if p.b_ih is None else xp + p.b_ih


def recurrent_projection(h: Tensor, p: LayerParams) -> Tensor:
    """(B, H_out) -> (B, G*H): LN_hh(W_hh h) + b_hh."""
    if p.ln_hh is None:
        return F.linear(h, p.w_hh, p.b_hh)
    hp = layer_norm(F.linear(h, p.w_hh), p.ln_hh)
    return hp if p.b_hh is None else hp + p.b_hh


@dataclass(frozen=True)
class CellOptions:
    """Structural options a cell's step needs (the stochastic ones live in the engines' masks)."""

    coupled: bool = False  # LSTM only: i = 1 - f (CIFG)
    nonlinearity: str = "tanh"  # RNN only: "tanh" or "relu"


class Cell(ABC):
    """One recurrent cell type. Subclasses are stateless; adding a cell is adding a file that
    defines one and passes it to lstmkit.cells.register_cell (tests/fixtures/janet_cell.py)."""

    name: str  # unique in lstmkit.cells.registry; "LSTM", "GRU", "RNN" for torch's three
    state_names: tuple[str, ...]  # ("h", "c") for LSTM, ("h",) otherwise; h comes first
    supports_projection: bool = False  # proj_size (LSTM)
    supports_peephole: bool = False
    supports_coupled: bool = False

    def __reduce__(self):
        """Copies and pickles resolve to the registered cell itself: engines key their kernel
        tables by the cell object, so a copied layer must keep the very same one."""
        from lstmkit.cells.registry import get_cell

        return (get_cell, (self.name,))

    def torch_mode(self, opts: CellOptions) -> str | None:
        """torch's name for the same cell ("LSTM", "GRU", "RNN_TANH", "RNN_RELU") when torch has
        a kernel computing exactly this step, else None. Engines that wrap torch's kernels look
        the mode up in their own tables; a cell torch lacks keeps the default."""
        return None

    @abstractmethod
    def layout(self, opts: CellOptions) -> tuple[str, ...]:
        """Gate blocks with weight rows, in storage order (see lstmkit.cells.gates)."""

    @abstractmethod
    def trace_gates(self, opts: CellOptions) -> tuple[str, ...]:
        """Gate activations reported by `step` (and so in a Trace), in order."""

    def num_blocks(self, opts: CellOptions) -> int:
        return max(1, len(self.layout(opts)))

    @abstractmethod
    def step(
        self, xp: Tensor, hp: Tensor, state: tuple[Tensor, ...], p: LayerParams, opts: CellOptions
    ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        """One time step: xp, hp (B, G*H) from the projections, state as in `state_names`.

        Returns the new state and the gate activations {name: (B, H)}.
        """
