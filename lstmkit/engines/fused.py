"""The fused engine: a hand-written backward through time, every cell and option, plain eager torch.

Per layer and direction one torch.autograd.Function runs the whole sequence:

forward   xp = LN_ih(W_ih x) + b_ih for all T steps at once (one matmul, outside the Function so
          autograd gives dW_ih = dxp^T x as one matmul too); then per step one recurrent matmul
          and the cell's own pointwise step (lstmkit.cells: the equations are written once, there),
          all under no_grad, so no autograd graph is built inside the loop. Saved: the states
          (T, B, H_out) / (T, B, H), the gate activations (T, B, H) each, and only where needed
          the pre-zoneout states (zoneout on) and the recurrent projection (GRU: r scales W_hn h).
backward  lstmkit.engines.fused_lstm / fused_gru. Everything that does not depend on the carried
          gradient (gate derivatives, tanh(c), the coefficients that turn dc, dh into gate
          gradients) is computed for all steps at once before the loop; inside the loop only the
          hidden/cell gradient chain runs: a few pointwise ops and one matmul dpre_t W_hh per
          step. The gate gradients land in one (T, B, G*H) buffer, so after the loop the weight
          gradients are single large matmuls over T*B rows: dW_hh = dpre^T h_prev, dW_hr = dh^T m,
          and dxp is that buffer itself (autograd then does dW_ih = dxp^T x, dx = dxp W_ih).

Gate traces are outputs of the Function, so gradients flow through them (a loss may use gates).
What it does not do: double backward (create_graph=True through the engine raises); use
engine="reference" for higher-order gradients. Results equal the reference engine's to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmkit.cells.base import Cell, CellOptions, LayerParams, input_projection, recurrent_projection
from lstmkit.cells.regularizers import StepMasks, zoneout
from lstmkit.engines.base import Engine, RecurrentCall, RecurrentResult
from lstmkit.engines.fused_gru import gru_backward, rnn_backward
from lstmkit.engines.fused_lstm import lstm_backward
from lstmkit.engines.reference import run_stack

# Tensor arguments of the Function after (xp, h0, c0), in this order; None where absent.
WEIGHT_FIELDS = ("w_hh", "b_hh", "ln_hh", "w_hr", "w_peep", "ln_c_w", "ln_c_b")


@dataclass
class DirectionConfig:
    """Everything a direction needs besides the differentiable tensors (constant in backward)."""

    cell: Cell
    opts: CellOptions
    p: LayerParams
    reverse: bool
    valid: Tensor | None  # (T, B, 1) bool
    masks: StepMasks
    rates: tuple[float, float]  # eval-mode zoneout (hidden, cell); 0 in training
    keep_hp: bool  # GRU: the backward needs W_hn h_{t-1} + b_hn

    @property
    def zoneout_on(self) -> bool:
        masks = (self.masks.zoneout_h, self.masks.zoneout_c)
        return any(m is not None for m in masks) or any(r > 0 for r in self.rates)

    def keep_coefficient(self, which: int, dtype: torch.dtype) -> Tensor | None:
        """d state_t / d new_t for state `which` (0 = h, 1 = c): (T, B, *) or None for 1.

        state_t = where(valid, zoneout(prev, new), prev) = a * new + (1 - a) * prev with
        a = valid * (1 - zoneout mask) in training, valid * (1 - rate) in evaluation.
        """
        mask = (self.masks.zoneout_h, self.masks.zoneout_c)[which]
        rate = self.rates[which]
        a = None
        if mask is not None:
            a = 1.0 - mask
        elif rate > 0:
            a = torch.full((1, 1, 1), 1.0 - rate, dtype=dtype, device=self.p.w_hh.device)
        if self.valid is not None:
            v = self.valid.to(dtype)
            a = v if a is None else a * v
        return a


def forward_loop(cfg: DirectionConfig, xp: Tensor, state: tuple[Tensor, ...]):
    """The time loop of the reference engine, without autograd, keeping what backward needs.

    Returns per-state stacks (T, B, *) of the states after each step, of the cell's new values
    before zoneout (the same stacks when zoneout is off), the gates {name: (T, B, H)}, and the
    recurrent projections (T, B, G*H) when cfg.keep_hp, else None. Indexed by time, not by order.
    """
    cell, opts, p, masks = cfg.cell, cfg.opts, cfg.p, cfg.masks
    T = xp.shape[0]
    n = len(state)
    states: list[list] = [[None] * T for _ in range(n)]
    news: list[list] = [[None] * T for _ in range(n)] if cfg.zoneout_on else states
    gates: dict[str, list] = {g: [None] * T for g in cell.trace_gates(opts)}
    hps: list = [None] * T
    zoneout_masks = (masks.zoneout_h, masks.zoneout_c)
    for t in range(T - 1, -1, -1) if cfg.reverse else range(T):
        h_in = state[0] if masks.recurrent is None else state[0] * masks.recurrent
        hp = recurrent_projection(h_in, p)  # (B, G*H): the one matmul of the step
        new, step_gates = cell.step(xp[t], hp, state, p, opts)
        if cfg.zoneout_on:
            for k in range(n):
                news[k][t] = new[k]
            new = tuple(
                zoneout(old, upd, None if zm is None else zm[t], rate)
                for old, upd, zm, rate in zip(state, new, zoneout_masks, cfg.rates)
            )
        if cfg.valid is not None:  # hold the state past each sequence's end
            new = tuple(torch.where(cfg.valid[t], upd, old) for upd, old in zip(new, state))
        state = new
        for k in range(n):
            states[k][t] = state[k]
        for name, value in step_gates.items():
            gates[name][t] = value
        if cfg.keep_hp:
            hps[t] = hp
    stacked = [torch.stack(s) for s in states]
    stacked_new = [torch.stack(s) for s in news] if cfg.zoneout_on else stacked
    gate_stacks = {name: torch.stack(v) for name, v in gates.items()}
    hp_stack = torch.stack(hps) if cfg.keep_hp else None
    return stacked, stacked_new, gate_stacks, hp_stack


class FusedDirection(torch.autograd.Function):
    """One layer and direction. Outputs: the h states (T, B, H_out), for LSTM the c states
    (T, B, H), then the gate activations in trace order (T, B, H) each (gradients flow)."""

    @staticmethod
    def forward(ctx, cfg: DirectionConfig, xp: Tensor, h0: Tensor, c0: Tensor | None, *weights):
        state = (h0,) if c0 is None else (h0, c0)
        states, news, gates, hp = forward_loop(cfg, xp, state)
        gate_names = tuple(gates)
        ctx.cfg, ctx.gate_names = cfg, gate_names
        ctx.n_states = len(state)
        ctx.save_for_backward(h0, c0, *states, *news, *gates.values(), hp)
        ctx.set_materialize_grads(False)  # unused outputs (e.g. gates) arrive as None
        return (*states, *gates.values())

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        cfg, n = ctx.cfg, ctx.n_states
        saved = ctx.saved_tensors
        h0, c0 = saved[0], saved[1]
        states = saved[2 : 2 + n]
        news = saved[2 + n : 2 + 2 * n]
        gates = dict(zip(ctx.gate_names, saved[2 + 2 * n : -1]))
        hp = saved[-1]
        d_states = grads[:n]
        d_gates = dict(zip(ctx.gate_names, grads[n:]))
        needs = dict(zip(("xp", "h0", "c0", *WEIGHT_FIELDS), ctx.needs_input_grad[1:]))
        name = cfg.cell.name
        if name == "LSTM":
            g = lstm_backward(cfg, h0, c0, states, news, gates, d_states, d_gates, needs)
        elif name == "GRU":
            g = gru_backward(cfg, h0, states[0], news[0], gates, hp, d_states[0], d_gates, needs)
        else:
            g = rnn_backward(cfg, h0, states[0], news[0], d_states[0], needs)
        return (None, g.get("xp"), g.get("h0"), g.get("c0"), *(g.get(f) for f in WEIGHT_FIELDS))


def run_direction(
    call: RecurrentCall,
    x: Tensor,
    state: tuple[Tensor, ...],
    p: LayerParams,
    reverse: bool,
    valid: Tensor | None,
    masks: StepMasks | None,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor]]:
    """Same contract as lstmkit.engines.reference.run_direction (run_stack calls either)."""
    cfg = DirectionConfig(
        cell=call.cell,
        opts=call.opts,
        p=p,
        reverse=reverse,
        valid=valid,
        masks=masks or StepMasks(),
        rates=(0.0, 0.0) if call.training else (call.zoneout[1], call.zoneout[0]),
        keep_hp=call.cell.name == "GRU",
    )
    xp = input_projection(x, p)  # (T, B, G*H), ordinary autograd: one matmul each way
    c0 = state[1] if len(state) > 1 else None
    weights = [getattr(p, f) for f in WEIGHT_FIELDS]
    outs = FusedDirection.apply(cfg, xp, state[0], c0, *weights)
    n = len(state)
    states, gate_values = outs[:n], outs[n:]
    last = 0 if reverse else x.shape[0] - 1
    final = tuple(s[last] for s in states)
    out = states[0] if valid is None else torch.where(valid, states[0], 0.0)  # (T, B, H_out)
    record: dict[str, Tensor] = {}
    if call.return_trace:
        named = dict(zip(call.cell.trace_gates(call.opts), gate_values))
        if n > 1:
            named["c"] = states[1]
        for k, v in named.items():
            record[k] = v if valid is None else torch.where(valid, v, 0.0)
        record["h"] = out
    return out, final, record


class FusedEngine(Engine):
    name = "fused"
    priority = 50  # below native (exact torch kernels), above reference (the readable loop)

    def unsupported(self, call: RecurrentCall) -> str | None:
        if not call.x.is_floating_point():
            return f"input dtype {call.x.dtype} is not a floating point type"
        return None

    def run(self, call: RecurrentCall) -> RecurrentResult:
        return run_stack(call, run_direction)
