"""The reference engine: autograd through the readable cell steps, one Python step at a time.

It supports every cell and option, and is the definition the other engines are tested against.
Exported to ONNX (torch.onnx.export, TorchScript) it is the loop unrolled for the exported
sequence length: any batch size runs, another length is refused by onnxruntime.
Sequences of different lengths are handled by masking: past a sequence's length its state is
held and its output is zero, which is exactly what torch's PackedSequence kernels compute. The
reverse direction runs t = T-1 .. 0 over the same padded tensor; a short sequence's state stays at
h0 until t reaches its last real position, so it starts exactly where a packed run would.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import LayerParams, input_projection, recurrent_projection
from lstmkit.cells.regularizers import zoneout
from lstmkit.engines.base import (
    DirectionCall,
    DirectionResult,
    Engine,
    RecurrentCall,
    RecurrentSpec,
)
from lstmkit.engines.resets import reset_steps, restart


def cell_step(
    spec: RecurrentSpec,
    p: LayerParams,
    xp_t: Tensor,
    state: tuple[Tensor, ...],
    rmask: Tensor | None,
    zoneout_t: tuple[Tensor | None, ...],
    rates: tuple[float, float],
) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    """One step of one layer-direction with its regularisers: the body of the loop below, and
    a stream's step (lstmkit.nn.stream). xp_t (B, G*H) from input_projection; state as in
    cell.state_names; rmask (B, H_out) recurrent dropout or None; zoneout_t this step's zoneout
    masks (h, c) or None each; rates the evaluation-mode zoneout (hidden, cell)."""
    h_in = state[0] if rmask is None else state[0] * rmask
    hp = recurrent_projection(h_in, p)  # (B, G*H)
    new, gates = spec.cell.step(xp_t, hp, state, p, spec.opts)
    new = tuple(
        zoneout(old, upd, zm, rate) for old, upd, zm, rate in zip(state, new, zoneout_t, rates)
    )
    return new, gates


def run_direction(call: RecurrentCall, d: DirectionCall) -> DirectionResult:
    """One layer, one direction, through the cell's own step (any registered cell)."""
    x, state, p, valid, masks = d.x, d.state, d.params, d.valid, d.masks
    cell = call.cell
    T = x.shape[0]
    xp = input_projection(x, p)  # (T, B, G*H): one matmul for all steps
    zoneout_masks = (masks.zoneout_h, masks.zoneout_c)
    rates = call.eval_zoneout  # (hidden, cell), as the states are ordered
    outputs: list[Tensor | None] = [None] * T
    record: dict[str, list[Tensor | None]] = {}
    edits = d.edits or ()
    initial, restarts = state, reset_steps(d.reset)
    for t in range(T - 1, -1, -1) if d.reverse else range(T):
        state = restart(t, restarts, d.reset, initial, state)  # a new episode / utterance
        zoneout_t = tuple(None if zm is None else zm[t] for zm in zoneout_masks)
        new, gates = cell_step(call.spec, p, xp[t], state, masks.recurrent, zoneout_t, rates)
        if valid is not None:  # hold the state past each sequence's end
            new = tuple(torch.where(valid[t], upd, old) for upd, old in zip(new, state))
        if edits:  # ablation / patching: what every later reader of the state sees
            new = tuple(s if e is None else e.at(t, s) for s, e in zip(new, edits))
        state = new
        outputs[t] = state[0] if valid is None else torch.where(valid[t], state[0], 0.0)
        if call.return_trace:
            named = dict(gates)
            named.update(zip(cell.state_names, state))
            for k, v in named.items():
                v = v if valid is None else torch.where(valid[t], v, 0.0)
                record.setdefault(k, [None] * T)[t] = v
    stacked = {k: torch.stack(v) for k, v in record.items()}
    output = torch.stack(outputs)  # (T, B, H_out)
    if torch.onnx.is_in_onnx_export():
        # The exported graph is this loop unrolled for the traced T. Reshaping to the input's
        # own (dynamic) length makes onnxruntime fail loudly on any other T instead of
        # silently returning T_traced steps.
        output = output.reshape(x.shape[0], x.shape[1], int(output.shape[-1]))
    return DirectionResult(output, state, stacked)


class ReferenceEngine(Engine):
    name = "reference"
    priority = 0
    supports_interventions = True
    supports_resets = True

    def unsupported(self, call: RecurrentCall) -> str | None:
        return None

    def run_direction(self, call: RecurrentCall, d: DirectionCall) -> DirectionResult:
        return run_direction(call, d)
