"""The reference engine: autograd through the readable cell steps, one Python step at a time.

It supports every cell and option, and is the definition the other engines are tested against.
Sequences of different lengths are handled by masking: past a sequence's length its state is
held and its output is zero, which is exactly what torch's PackedSequence kernels compute. The
reverse direction runs t = T-1 .. 0 over the same padded tensor; a short sequence's state stays at
h0 until t reaches its last real position, so it starts exactly where a packed run would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lstmkit.cells.base import LayerParams, input_projection, recurrent_projection
from lstmkit.cells.regularizers import StepMasks, zoneout
from lstmkit.engines.base import Engine, RecurrentCall, RecurrentResult
from lstmkit.trace import Trace


def run_direction(
    call: RecurrentCall,
    x: Tensor,
    state: tuple[Tensor, ...],
    p: LayerParams,
    reverse: bool,
    valid: Tensor | None,
    masks: StepMasks | None,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor]]:
    """One layer, one direction. x (T, B, I); valid (T, B, 1) bool or None.

    Returns the output (T, B, H_out), the final state, and when call.return_trace the recorded
    {gate names..., "c", "h"} as (T, B, *) tensors (zeros past each length), else {}.
    """
    cell, opts = call.cell, call.opts
    T = x.shape[0]
    xp = input_projection(x, p)  # (T, B, G*H): one matmul for all steps
    masks = masks or StepMasks()
    rate_c, rate_h = (0.0, 0.0) if call.training else call.zoneout
    zoneout_masks = (masks.zoneout_h, masks.zoneout_c)
    rates = (rate_h, rate_c)
    outputs: list[Tensor | None] = [None] * T
    record: dict[str, list[Tensor | None]] = {}
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_in = state[0] if masks.recurrent is None else state[0] * masks.recurrent
        hp = recurrent_projection(h_in, p)  # (B, G*H)
        new, gates = cell.step(xp[t], hp, state, p, opts)
        new = tuple(
            zoneout(old, upd, None if zm is None else zm[t], rate)
            for old, upd, zm, rate in zip(state, new, zoneout_masks, rates)
        )
        if valid is not None:  # hold the state past each sequence's end
            new = tuple(torch.where(valid[t], upd, old) for upd, old in zip(new, state))
        state = new
        outputs[t] = state[0] if valid is None else torch.where(valid[t], state[0], 0.0)
        if call.return_trace:
            named = dict(gates)
            if len(state) > 1:
                named["c"] = state[1]
            named["h"] = state[0]
            for k, v in named.items():
                v = v if valid is None else torch.where(valid[t], v, 0.0)
                record.setdefault(k, [None] * T)[t] = v
    return torch.stack(outputs), state, {k: torch.stack(v) for k, v in record.items()}


def valid_mask(lengths: Tensor | None, T: int, device: torch.device) -> Tensor | None:
    """(T, B, 1) bool, True where step t is inside sequence b; None when all are full length."""
    if lengths is None:
        return None
    steps = torch.arange(T, device=device)[:, None]
    return (steps < lengths.to(device)[None, :]).unsqueeze(-1)


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


def run_stack(call: RecurrentCall, direction_fn=run_direction) -> RecurrentResult:
    """Run every layer and direction with `direction_fn`; engines that differ only per direction
    (the fused engine) reuse this loop over layers."""
    x = call.x.transpose(0, 1) if call.batch_first else call.x  # (T, B, I)
    valid = valid_mask(call.lengths, x.shape[0], x.device)
    D = call.num_directions
    finals: list[tuple[Tensor, ...]] = []
    records: list[dict[str, Tensor]] = []
    layer_input = x
    for layer in range(call.num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            state0 = tuple(s[k] for s in call.hx)
            masks = call.masks[k] if call.masks is not None else None
            out, state, rec = direction_fn(
                call, layer_input, state0, call.params[k], d == 1, valid, masks
            )
            outs.append(out)
            finals.append(state)
            records.append(rec)
        layer_input = torch.cat(outs, dim=-1) if D == 2 else outs[0]  # (T, B, D*H_out)
        if call.dropout > 0 and call.training and layer < call.num_layers - 1:
            layer_input = F.dropout(layer_input, call.dropout, training=True)
    output = layer_input.transpose(0, 1) if call.batch_first else layer_input
    h_n = tuple(torch.stack([f[i] for f in finals]) for i in range(len(call.hx)))
    trace = build_trace(call, records) if call.return_trace else None
    return RecurrentResult(output, h_n, trace)


class ReferenceEngine(Engine):
    name = "reference"
    priority = 0

    def unsupported(self, call: RecurrentCall) -> str | None:
        return None

    def run(self, call: RecurrentCall) -> RecurrentResult:
        return run_stack(call)
