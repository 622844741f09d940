"""The engine contract: what a layer hands to an engine, what an engine writes, what it returns.

    RecurrentSpec   the static structure of a stack (cell, sizes, layers, directions, options),
                    built once when the layer is constructed
    RecurrentCall   one forward pass: spec + parameters, input, initial states, lengths, masks
    DirectionCall   one layer and direction of that pass, in time-major canonical form
    Engine          `unsupported(call)` says whether it computes a call exactly (and why not);
                    `run_direction(call, d)` computes one layer-direction. The loop over layers and
                    directions (inter-layer dropout, states, traces) is `run_stack`, written once
                    here; an engine that computes whole stacks (native) overrides `run` instead.

A layer (lstmkit.nn) validates the user's input, turns PackedSequence / unbatched / lengths= input
into one canonical RecurrentCall, samples the regularisers' masks, and lets an engine compute; an
engine never sees PackedSequence or unbatched tensors. Engines know cells through tables keyed by
the cell object (see lstmkit.cells.registry): a cell without an entry is `unsupported`, never
computed as some other cell. To add an engine, write a module with one Engine subclass and list
it in lstmkit.engines.ENGINE_MODULES; no engine imports another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from lstmkit.cells.base import Cell, CellOptions, LayerParams
from lstmkit.cells.regularizers import StepMasks, ZoneoutRates
from lstmkit.engines.resets import direction_resets
from lstmkit.intervene import StateEdits, dense
from lstmkit.trace import Trace


@dataclass(frozen=True)
class RecurrentSpec:
    """The static structure of a stack (the layer rebuilds it when one of these attributes
    changes)."""

    cell: Cell
    opts: CellOptions
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0  # between layers, on every layer's output but the last
    peephole: bool = False
    layer_norm: bool = False
    zoneout: ZoneoutRates = ZoneoutRates()
    recurrent_dropout: float = 0.0

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1


@dataclass
class RecurrentCall:
    """One forward pass of a whole stack, in canonical form. The spec's fields read as the call's
    own (call.cell, call.num_layers, ...).

    x: (T, B, I), or (B, T, I) when batch_first. lengths: (B,) int64 on CPU, each in [1, T], or None
    (all sequences full length). hx: the initial states as in cell.state_names, each (L*D, B, *):
    h (L*D, B, H_out), c (L*D, B, H). params: L*D entries, layer-major then direction.
    masks: L*D StepMasks when a stochastic regulariser is active in training, else None.
    """

    spec: RecurrentSpec
    params: list[LayerParams]
    x: Tensor
    hx: tuple[Tensor, ...]
    lengths: Tensor | None = None
    training: bool = False
    masks: list[StepMasks] | None = None
    return_trace: bool = False
    # lstmkit.intervene.bind(...): {layer * D + direction: edits}, or None (no intervention)
    intervention: dict | None = None
    # (T, B) bool, time-major, on x's device, or None: True where sequence b's state goes back
    # to its initial state (hx's row b) before step t; False at and past each length
    resets: Tensor | None = None

    def __getattr__(self, name: str):
        if name == "spec":  # not set yet (copy / unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.spec, name)

    @property
    def has_step_regularizers(self) -> bool:
        """Recurrent dropout or zoneout: they change the step itself (zoneout in eval too)."""
        active_dropout = self.training and self.recurrent_dropout > 0
        return active_dropout or ZoneoutRates(*self.zoneout).active

    @property
    def eval_zoneout(self) -> tuple[float, float]:
        """The zoneout rates (hidden, cell) applied as an expectation: evaluation mode only."""
        return (0.0, 0.0) if self.training else ZoneoutRates(*self.zoneout).by_state


@dataclass
class DirectionCall:
    """One layer and direction. x (T, B, I) time-major; state as in cell.state_names, (B, H_out)
    and (B, H); valid (T, B, 1) bool or None (all full length); masks never None.

    reset (T, B, 1) bool or None, in this direction's own terms: True where the state entering
    step t is the initial state (`state`) instead of the previous step's. For the forward
    direction that is call.resets; the reverse direction crosses a boundary t the other way,
    entering step t - 1 afresh (see direction_resets).

    edits: with call.intervention, one lstmkit.intervene.StateEdits or None per state (as in
    cell.state_names), the edits of this layer-direction as dense masks and values (lengths
    folded in); None without an intervention or when it edits nothing here."""

    x: Tensor
    state: tuple[Tensor, ...]
    params: LayerParams
    layer: int
    reverse: bool
    valid: Tensor | None
    masks: StepMasks = field(default_factory=StepMasks)
    reset: Tensor | None = None
    edits: tuple[StateEdits | None, ...] | None = None


@dataclass
class DirectionResult:
    """output (T, B, H_out), zero past each length; state: the final states; record: with
    call.return_trace, {gate names..., "c" (cells with one), "h"} as (T, B, *), zero past each
    length; else {}."""

    output: Tensor
    state: tuple[Tensor, ...]
    record: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class RecurrentResult:
    """output: like x but with D*H_out features; h_n: like hx; trace: canonical (T, B) layout."""

    output: Tensor
    h_n: tuple[Tensor, ...]
    trace: Trace | None = None


class Engine(ABC):
    name: str
    priority: int  # "auto" tries engines from the highest priority down
    # torch.compile can trace run() into one graph (False: "auto" passes over it while compiling)
    traceable: bool = True
    # applies call.intervention (ablation / patching, lstmkit.intervene); an engine that does not
    # is never given one: select() refuses it for them, so none can silently ignore an edit
    supports_interventions: bool = False
    # applies DirectionCall.reset (per-sample resets); select() refuses resets to the others
    supports_resets: bool = False

    @abstractmethod
    def unsupported(self, call: RecurrentCall) -> str | None:
        """None if this engine computes `call` exactly; otherwise the reason, in a few words."""

    def run_direction(self, call: RecurrentCall, d: DirectionCall) -> DirectionResult:
        """Compute one layer and direction. Only called when `unsupported(call)` is None."""
        raise NotImplementedError(f"engine {self.name!r} computes whole stacks (see its run)")

    def run(self, call: RecurrentCall) -> RecurrentResult:
        """Compute the call: by default every layer and direction through run_direction."""
        return run_stack(self, call)


ONNX_REFUSAL = (
    "its operators have no ONNX form (torch.onnx.export: engine='auto' exports torch.nn's cells "
    "and the peephole / coupled LSTM as ONNX's LSTM / GRU / RNN operators, the rest as the "
    "reference engine's loop unrolled)"
)


def valid_mask(lengths: Tensor | None, T: int, device: torch.device) -> Tensor | None:
    """(T, B, 1) bool, True where step t is inside sequence b; None when all are full length."""
    if lengths is None:
        return None
    steps = torch.arange(T, device=device)[:, None]
    return (steps < lengths.to(device)[None, :]).unsqueeze(-1)


def run_stack(engine: Engine, call: RecurrentCall) -> RecurrentResult:
    """Every layer and direction through engine.run_direction; dropout between layers (torch's
    RNG, so two engines given the same seed draw the same masks); states and traces gathered."""
    x = call.x.transpose(0, 1) if call.batch_first else call.x  # (T, B, I)
    valid = valid_mask(call.lengths, x.shape[0], x.device)
    D = call.num_directions
    resets = [direction_resets(call.resets, reverse=d == 1) for d in range(D)]
    widths = tuple(s.shape[-1] for s in call.hx)  # (H_out,) or (H_out, H)
    finals: list[tuple[Tensor, ...]] = []
    records: list[dict[str, Tensor]] = []
    layer_input = x
    for layer in range(call.num_layers):
        outs = []
        for direction in range(D):
            k = layer * D + direction
            d = DirectionCall(
                x=layer_input,
                state=tuple(s[k] for s in call.hx),
                params=call.params[k],
                layer=layer,
                reverse=direction == 1,
                valid=valid,
                masks=call.masks[k] if call.masks is not None else StepMasks(),
                reset=resets[direction],
            )
            if call.intervention and k in call.intervention:  # as dense masks and values
                d.edits = dense(call.intervention[k], x.shape[0], x.shape[1], widths, x, valid)
            result = engine.run_direction(call, d)
            outs.append(result.output)
            finals.append(result.state)
            records.append(result.record)
        layer_input = torch.cat(outs, dim=-1) if D == 2 else outs[0]  # (T, B, D*H_out)
        if call.dropout > 0 and call.training and layer < call.num_layers - 1:
            layer_input = F.dropout(layer_input, call.dropout, training=True)
    output = layer_input.transpose(0, 1) if call.batch_first else layer_input
    h_n = tuple(torch.stack([f[i] for f in finals]) for i in range(len(call.hx)))
    trace = build_trace(call, records) if call.return_trace else None
    return RecurrentResult(output, h_n, trace)


def build_trace(call: RecurrentCall, records: list[dict[str, Tensor]]) -> Trace:
    """records[layer*D + d][name] (T, B, *) -> Trace with (L, D, T, B, *) tensors."""
    L, D = call.num_layers, call.num_directions

    def stacked(name: str) -> Tensor:
        per_layer = [torch.stack([records[l * D + d][name] for d in range(D)]) for l in range(L)]
        return torch.stack(per_layer)

    names = call.cell.trace_gates(call.opts)
    return Trace(
        mode=call.cell.name,
        gate_names=names,
        gates={n: stacked(n) for n in names},
        hidden=stacked("h"),
        cell=stacked("c") if "c" in call.cell.state_names else None,
        lengths=call.lengths,
    )


def masked(x: Tensor, valid: Tensor | None) -> Tensor:
    """x (T, B, *) with the steps past each sequence's end zeroed."""
    return x if valid is None else torch.where(valid, x, 0.0)
