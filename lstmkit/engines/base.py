"""The engine boundary: what a layer hands to an engine, and what it gets back.

A layer (lstmkit.nn) validates the user's input, turns PackedSequence / unbatched / lengths= input
into one canonical RecurrentCall, samples the regularisers' masks, and lets an engine compute.
An engine only computes: it never sees PackedSequence or unbatched tensors. To add an engine,
write a module with an Engine subclass and list it in lstmkit.engines.ENGINE_MODULES.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor

from lstmkit.cells.base import Cell, CellOptions, LayerParams
from lstmkit.cells.regularizers import StepMasks
from lstmkit.trace import Trace


@dataclass
class RecurrentCall:
    """One forward pass of a whole stack, in canonical form.

    x: (T, B, I), or (B, T, I) when batch_first. lengths: (B,) int64 on CPU, each in [1, T], or None
    (all sequences full length). hx: the initial states as in cell.state_names, each (L*D, B, *):
    h (L*D, B, H_out), c (L*D, B, H). params: L*D entries, layer-major then direction.
    masks: L*D StepMasks when a stochastic regulariser is active in training, else None.
    """

    cell: Cell
    opts: CellOptions
    params: list[LayerParams]
    x: Tensor
    hx: tuple[Tensor, ...]
    lengths: Tensor | None
    batch_first: bool
    num_layers: int
    bidirectional: bool
    hidden_size: int
    proj_size: int
    bias: bool
    dropout: float  # between layers, on every layer's output but the last
    training: bool
    zoneout: tuple[float, float] = (0.0, 0.0)  # (cell, hidden) rates
    recurrent_dropout: float = 0.0
    masks: list[StepMasks] | None = None
    return_trace: bool = False

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def has_structural_extras(self) -> bool:
        """Peepholes, layer norm or a coupled gate: cells torch's kernels do not have."""
        p = self.params[0]
        return (
            self.opts.coupled or p.w_peep is not None or p.ln_ih is not None or p.ln_c_w is not None
        )

    @property
    def has_step_regularizers(self) -> bool:
        """Recurrent dropout or zoneout: they change the step itself (zoneout in eval too)."""
        active_dropout = self.training and self.recurrent_dropout > 0
        return active_dropout or any(z > 0 for z in self.zoneout)


@dataclass
class RecurrentResult:
    """output: like x but with D*H_out features; h_n: like hx; trace: canonical (T, B) layout."""

    output: Tensor
    h_n: tuple[Tensor, ...]
    trace: Trace | None = None


class Engine(ABC):
    name: str
    priority: int  # "auto" tries engines from the highest priority down

    @abstractmethod
    def unsupported(self, call: RecurrentCall) -> str | None:
        """None if this engine computes `call` exactly; otherwise the reason, in a few words."""

    @abstractmethod
    def run(self, call: RecurrentCall) -> RecurrentResult:
        """Compute the call. Only called when `unsupported(call)` is None."""
