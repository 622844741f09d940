"""Causal interventions on a recurrent stack: ablate units, or patch in states from another run.

    out, h = lstm(x, intervention=Intervention.ablate(layer=1, units=[12, 45], state="c"))
    _, _, trace_a = lstm(x_a, return_trace=True)
    out_b, _ = lstm(x_b, intervention=Intervention.patch(trace_a, layer=0, steps=[3]))

Looking at a cell shows what it correlates with; changing it shows what depends on it (Lakretz et
al. 2019 ablate two LSTM units and long-distance agreement falls to chance). An Edit replaces
some units of one state ("h", or "c" for an LSTM) of one layer and direction, at some steps, by a
value: zero, any constant, or values recorded from another input (activation patching).

When an edit happens: right after step t has computed its new states, before anything reads
them. So the edited state is what the rest of the network sees from step t on: the layer's output
at t (for "h"), the next layer's input, step t + 1's recurrence and the final states. An edit of
"c" changes what the cell carries forward; h_t, already computed from the unedited c_t, stays.
Steps are input positions (direction 1 included), time-major; steps past a sequence's length
(lengths= / PackedSequence) are never edited. Gradients flow as through any tensor op: an
ablated unit passes none back, a patched value receives its own.

How engines apply them: run_stack turns a layer-direction's edits into dense masks and values
(`dense` -> StateEdits) and every engine applies the one equation StateEdits.at, the reference
engine in its Python loop, the fused engine inside its operators (forward and hand-written
backward, Python and compiled loops). Engines that cannot apply interventions say so
(`unsupported`: torch's own kernels, Triton), and `auto` picks one that can.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lstmkit.trace import Trace

Index = Sequence[int] | slice | int | None


@dataclass(frozen=True)
class Edit:
    """Replace `units` of state `state` of (`layer`, `direction`) at `steps` by `value`.

    units, steps: an int, int sequences or slices; None = all; each unit once. value: a finite
    number, a tensor broadcastable to (B, U) (the same at every edited step), or a (T, B, U)
    tensor read at each edited step t (U = the number of edited units): what Intervention.patch
    builds from a Trace."""

    layer: int
    state: str = "h"
    units: Index = None
    steps: Index = None
    value: float | Tensor = 0.0
    direction: int = 0


@dataclass(frozen=True)
class Intervention:
    edits: tuple[Edit, ...]

    @classmethod
    def ablate(
        cls,
        layer: int,
        units: Index = None,
        state: str = "h",
        steps: Index = None,
        value: float = 0.0,
        direction: int = 0,
    ) -> Intervention:
        """Fix `units` of one state to `value` (0: the classic ablation) at `steps` (all)."""
        return cls((Edit(layer, state, units, steps, value, direction),))

    @classmethod
    def patch(
        cls,
        source: Trace,
        layer: int,
        units: Index = None,
        states: Sequence[str] = ("h", "c"),
        steps: Index = None,
        direction: int = 0,
    ) -> Intervention:
        """Put the states that `source` (a Trace of another input, same batch size) recorded
        into this run, at `steps` (all): the run then continues from the patched state."""
        edits = []
        for state in states:
            if state == "c" and source.cell is None:
                continue  # GRU / RNN: h is the whole state
            recorded = source.states(layer, direction)[state]  # (T, B, H) or (B, T, H), (T, H)
            if source.batch_first and source.batched:
                recorded = recorded.transpose(0, 1)
            if not source.batched:
                recorded = recorded.unsqueeze(1)
            cols = recorded[..., _positions(units, recorded.shape[-1], "unit")]
            edits.append(Edit(layer, state, units, steps, cols, direction))
        return cls(tuple(edits))

    def __add__(self, other: Intervention) -> Intervention:
        return Intervention(self.edits + other.edits)


@dataclass
class BoundEdit:
    """An edit checked against one call: the state's index, unit and step positions."""

    state_index: int
    units: Tensor  # (U,) int64
    steps: set[int]
    value: float | Tensor  # number, (B, U)-broadcastable, or (T, B, U)


def _positions(index: Index, size: int, what: str) -> list[int]:
    """An edit's units or steps as positions in [0, size): None = all, a slice, one int or a
    sequence of ints (anything with __index__: NumPy integers, an integer tensor's items)."""
    if index is None:
        return list(range(size))
    if isinstance(index, slice):
        return list(range(size))[index]
    items = [index] if _is_integer(index) else list(index)
    out = []
    for i in items:
        if not _is_integer(i):
            raise TypeError(
                f"{what}s must be ints, a slice or None (all), got {type(i).__name__} {i!r}"
            )
        i = operator.index(i)
        if not -size <= i < size:
            raise ValueError(
                f"{what} {i!r} is out of range: there are {size} {what}s (0..{size - 1})"
            )
        out.append(i % size)
    return out


def _is_integer(i) -> bool:
    if isinstance(i, bool) or (isinstance(i, Tensor) and i.is_floating_point()):
        return False
    try:
        operator.index(i)
    except TypeError:
        return False
    return True


def _check_value(e: Edit, units: list[int], T: int, B: int) -> float | Tensor:
    """The edit's value, checked. A number must be finite: an infinite cell makes every later
    step NaN, and the compiled loops assume finite numbers."""
    value, where = e.value, f"edit of {e.state} units {units[:8]}"
    if isinstance(value, Tensor):  # (B, U) / (U,) for every step, or (T, B, U) per step
        want = (T, B, len(units))
        try:
            fits = torch.broadcast_shapes(tuple(value.shape), want) == want
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"{where}: a value must be a number, a tensor broadcastable to (B, U) = "
                f"{(B, len(units))}, or recorded values (T, B, U) = {(T, B, len(units))}; got "
                f"{tuple(value.shape)} (unbatched input has B = 1; patch from a run of the "
                f"same length and batch)"
            )
        return value  # (its entries are not checked: that would stop torch.export)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"edit value must be a number or a tensor, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where}: the value {value!r} is not finite; edits must be finite")
    return float(value)


def bind(intervention: Intervention, spec, T: int, B: int) -> dict[int, list[BoundEdit]]:
    """Check every edit against the stack and the input; {layer * D + direction: edits}."""
    if not isinstance(intervention, Intervention):
        raise TypeError(
            f"intervention must be an lstmkit.Intervention (e.g. Intervention.ablate(layer=0, "
            f"units=[3])), got {type(intervention).__name__}"
        )
    L, D, names = spec.num_layers, spec.num_directions, spec.cell.state_names
    sizes = {"h": spec.proj_size or spec.hidden_size, "c": spec.hidden_size}
    bound: dict[int, list[BoundEdit]] = {}
    for e in intervention.edits:
        if not -L <= e.layer < L or not 0 <= e.direction < D:
            raise ValueError(
                f"edit of layer {e.layer}, direction {e.direction}: this stack has {L} layers "
                f"and {D} direction(s)"
            )
        if e.state not in names:
            raise ValueError(f"edit of state {e.state!r}: the {spec.cell.name} cell has {names}")
        units = _positions(e.units, sizes[e.state], "unit")
        if len(set(units)) < len(units):  # one value per unit: a repeat would share gradients
            twice = sorted({u for u in units if units.count(u) > 1})
            raise ValueError(
                f"edit of {e.state}: unit(s) {twice} listed more than once (negative indices "
                f"count from the end); list each unit once, or add a second edit"
            )
        steps = set(_positions(e.steps, T, "step"))
        value = _check_value(e, units, T, B)
        k = (e.layer % L) * D + e.direction
        index = torch.tensor(units, dtype=torch.long)
        bound.setdefault(k, []).append(BoundEdit(names.index(e.state), index, steps, value))
    return bound


@dataclass
class StateEdits:
    """The edits of one state of one layer-direction in the form every engine applies them:
    mask (T, B, U_state) bool, True where the state after step t is replaced, past each
    sequence's end never; value (T, B, U_state), read where mask is True (differentiable: a
    patched value receives its gradient). Later edits of the same unit and step win."""

    mask: Tensor
    value: Tensor

    def at(self, t: int, state: Tensor) -> Tensor:
        """State (B, U_state) after step t, edited: the one equation of an edit."""
        return torch.where(self.mask[t], self.value[t].to(state.dtype), state)


def dense(
    edits: list[BoundEdit], T: int, B: int, widths: Sequence[int], like: Tensor, valid
) -> tuple[StateEdits | None, ...]:
    """One layer-direction's bound edits -> a StateEdits per state (None: never edited).
    widths: each state's size (h, c); like: a tensor of the run's dtype and device; valid:
    (T, B, 1) bool or None (the steps inside each sequence)."""
    out: list[StateEdits | None] = [None] * len(widths)
    for e in edits:
        W, U = widths[e.state_index], len(e.units)
        units = e.units.to(like.device)
        steps = torch.tensor(sorted(e.steps), dtype=torch.long, device=like.device)
        mask = torch.zeros(T, 1, W, dtype=torch.bool, device=like.device)
        mask[steps[:, None], 0, units[None, :]] = True  # (S, U) positions of (T, W)
        mask = mask.expand(T, B, W)
        mask = mask & valid if valid is not None else mask.contiguous()
        if isinstance(e.value, Tensor) and e.value.device != like.device:
            raise ValueError(
                f"edit of units {e.units.tolist()[:8]}: the value is on {e.value.device}, the "
                f"input on {like.device}; move the value to the input's device"
            )
        # (T, B, U) recorded from another run, or the same (B, U)-broadcastable value each step
        given = torch.as_tensor(e.value, dtype=like.dtype, device=like.device).expand(T, B, U)
        value = like.new_zeros(T, B, W).index_copy(2, units, given)  # out of place: vmap-able
        prev = out[e.state_index]
        if prev is not None:  # an earlier edit of this state: keep it where this one is silent
            mask, value = prev.mask | mask, torch.where(mask, value, prev.value)
        out[e.state_index] = StateEdits(mask, value)
    return tuple(out)
