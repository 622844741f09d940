"""The fused engine: a hand-written backward through time, every option of torch's three cells.

Per layer and direction one PyTorch operator runs the whole sequence (lstmkit.engines.fused_ops:
torch.ops.lstmkit.lstm_direction / gru_direction / rnn_direction, with registered backward ops,
fake implementations for torch.compile / torch.export, and torch.func support):

forward   xp = LN_ih(W_ih x) + b_ih for all T steps at once (one matmul, outside the operator so
          autograd gives dW_ih = dxp^T x as one matmul too); then per step one recurrent matmul
          and the cell's own pointwise step (lstmkit.cells: the equations are written once, there),
          with no autograd graph inside the loop. Kept for the backward: the states, the gate
          activations and, only where needed, the pre-zoneout states and the recurrent
          projection (GRU: r scales W_hn h).
backward  lstmkit.engines.fused_lstm / fused_gru. Inside the loop only the hidden/cell gradient
          chain runs: a few pointwise ops and one matmul dpre_t W_hh per step. The gate gradients
          land in one (T, B, G*H) buffer, so after the loop the weight gradients are single large
          matmuls over T*B rows, and dxp is that buffer itself.

The LSTM's loops (forward and backward) also exist compiled, built on first use
(lstmkit.engines.cpu_loops, csrc/): same math, a step costs its matmul plus a few microseconds.

Gate traces are outputs of the operators, so gradients flow through them (a loss may use gates).
Interventions (lstmkit.intervene) are operator arguments too: a mask and values per state,
applied right after each step in both loops; an edited unit's gradient goes to its value.
What it does not do: double backward (differentiating its gradients raises); use
engine="reference" for higher-order gradients. Results equal the reference engine's to rounding.
How it works in more detail, and its measured speed: docs/engines.md.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from lstmkit.cells.base import Cell, LayerParams, input_projection
from lstmkit.cells.gates import lstm_layout, split
from lstmkit.cells.gru import GRU_CELL
from lstmkit.cells.lstm import LSTM_CELL
from lstmkit.cells.rnn import RNN_CELL
from lstmkit.engines.base import (
    ONNX_REFUSAL,
    DirectionCall,
    DirectionResult,
    Engine,
    RecurrentCall,
    masked,
)
from lstmkit.engines.fused_ops import LSTM_INPUTS, LSTMDirection
from lstmkit.engines.fused_ops_h import GRU_INPUTS, RNN_INPUTS, HDirection
from lstmkit.engines.ops import autograd_wrapper


def _folded(p: LayerParams) -> LayerParams:
    """xp + hp = (W_ih x + b_ih + b_hh) + W_hh h: b_hh added to the input projection's bias saves
    a (T, B, G*H) tensor and an op per step (autograd sums its gradient)."""
    if p.b_hh is None:
        return p
    return replace(p, b_ih=p.b_ih + p.b_hh, b_hh=None)


def _common(call: RecurrentCall, d: DirectionCall, p: LayerParams) -> dict:
    """The operator arguments every cell shares (names as in the op schemas)."""
    rate_h, rate_c = call.eval_zoneout
    named = dict(
        w_hh=p.w_hh, ln_hh=p.ln_hh, rmask=d.masks.recurrent, valid=d.valid, reset=d.reset,
        zoneout_h=d.masks.zoneout_h, zoneout_c=d.masks.zoneout_c, rate_h=rate_h,
        rate_c=rate_c, reverse=d.reverse,
    )  # fmt: skip
    edits = d.edits or ()  # interventions: dense masks and values per state (h, c)
    for k, name in enumerate(("h", "c")):  # (the GRU / RNN schemas have no edit_c)
        e = edits[k] if k < len(edits) else None
        named[f"edit_{name}"] = None if e is None else e.mask
        named[f"edit_{name}_value"] = None if e is None else e.value
    return named


def _lstm(call: RecurrentCall, d: DirectionCall) -> DirectionResult:
    p = _folded(d.params)  # the LSTM step adds LN_hh(W_hh h) to xp: b_hh folds in
    xp = input_projection(d.x, p)  # (T, B, G*H), ordinary autograd: one matmul each way
    named = _common(call, d, p) | dict(
        xp=xp, h0=d.state[0], c0=d.state[1], w_hr=p.w_hr, w_peep=p.w_peep, ln_c_w=p.ln_c_w,
        ln_c_b=p.ln_c_b, coupled=call.opts.coupled,
    )  # fmt: skip
    args = [named[k] for k in LSTM_INPUTS]
    if autograd_wrapper(args):
        Hs, Cs, c_last, A, _, _ = LSTMDirection.apply(*args)
    else:
        Hs, Cs, c_last, A, _, _ = torch.ops.lstmkit.lstm_direction(*args)
    out = masked(Hs, d.valid)  # (T, B, H_out)
    final = (Hs[0 if d.reverse else -1], c_last)
    record: dict[str, Tensor] = {}
    if call.return_trace:  # the activation stack (T, B, G*H) in layout order, then the cells
        gates = split(A, lstm_layout(call.opts.coupled))
        if call.opts.coupled:  # CIFG: i = 1 - f, differentiable here (autograd adds it)
            gates["i"] = 1.0 - gates["f"]
        gates = {g: gates[g] for g in call.cell.trace_gates(call.opts)}
        record = {k: masked(v, d.valid) for k, v in (gates | {"c": Cs}).items()}
        record["h"] = out
    return DirectionResult(out, final, record)


def _single_state(call: RecurrentCall, d: DirectionCall) -> DirectionResult:
    """GRU and RNN: one state, h."""
    gru = call.cell is GRU_CELL
    p = d.params if gru or d.params.ln_hh is not None else _folded(d.params)
    xp = input_projection(d.x, p)  # (T, B, G*H)
    named = _common(call, d, p) | dict(xp=xp, h0=d.state[0], b_hh=p.b_hh)
    if not gru:
        named["relu"] = call.opts.nonlinearity == "relu"
    names = GRU_INPUTS if gru else RNN_INPUTS
    args = [named[k] for k in names]
    if autograd_wrapper(args):
        Hs, _, G, _ = HDirection.apply(call.cell.name, *args)
    else:
        op = torch.ops.lstmkit.gru_direction if gru else torch.ops.lstmkit.rnn_direction
        Hs, _, G, _ = op(*args)
    out = masked(Hs, d.valid)
    record: dict[str, Tensor] = {}
    if call.return_trace:
        gates = dict(zip(call.cell.trace_gates(call.opts), G)) if gru else {}
        record = {k: masked(v, d.valid) for k, v in gates.items()}
        record["h"] = out
    return DirectionResult(out, (Hs[0 if d.reverse else -1],), record)


# The cells this engine knows, and how it runs each; any other cell is unsupported.
KERNELS: dict[Cell, object] = {LSTM_CELL: _lstm, GRU_CELL: _single_state, RNN_CELL: _single_state}


class FusedEngine(Engine):
    name = "fused"
    priority = 50  # below native (exact torch kernels), above reference (the readable loop)
    supports_resets = True
    supports_interventions = True

    def unsupported(self, call: RecurrentCall) -> str | None:
        if torch.onnx.is_in_onnx_export():
            return ONNX_REFUSAL
        if call.cell not in KERNELS:
            return f"no fused kernel for the {call.cell.name} cell (it knows LSTM, GRU, RNN)"
        if not call.x.is_floating_point():
            return f"input dtype {call.x.dtype} is not a floating point type"
        return None

    def run_direction(self, call: RecurrentCall, d: DirectionCall) -> DirectionResult:
        return KERNELS[call.cell](call, d)
