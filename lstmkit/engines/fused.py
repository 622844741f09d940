"""The fused engine: a hand-written backward through time, every cell and option.

Per layer and direction one torch.autograd.Function runs the whole sequence:

forward   xp = LN_ih(W_ih x) + b_ih for all T steps at once (one matmul, outside the Function so
          autograd gives dW_ih = dxp^T x as one matmul too); then per step one recurrent matmul
          and the cell's own pointwise step (lstmkit.cells: the equations are written once, there),
          all under no_grad, so no autograd graph is built inside the loop. Saved: the states
          (T, B, H_out) / (T, B, H), the gate activations (the LSTM's as one (T, B, G*H)
          stack, the GRU's (T, B, H) each), and only where needed
          the pre-zoneout states (zoneout on) and the recurrent projection (GRU: r scales W_hn h).
backward  lstmkit.engines.fused_lstm / fused_gru. Everything that does not depend on the carried
          gradient (gate derivatives, tanh(c), the coefficients that turn dc, dh into gate
          gradients) is computed for all steps at once before the loop; inside the loop only the
          hidden/cell gradient chain runs: a few pointwise ops and one matmul dpre_t W_hh per
          step. The gate gradients land in one (T, B, G*H) buffer, so after the loop the weight
          gradients are single large matmuls over T*B rows: dW_hh = dpre^T h_prev, dW_hr = dh^T m,
          and dxp is that buffer itself (autograd then does dW_ih = dxp^T x, dx = dxp W_ih).

The LSTM's loops (forward and backward) also exist compiled, built on first use
(lstmkit.engines.cpu_loops, csrc/): same math, a step costs its matmul plus a few microseconds.

Gate traces are outputs of the Function, so gradients flow through them (a loss may use gates).
What it does not do: double backward (create_graph=True through the engine raises); use
engine="reference" for higher-order gradients. Results equal the reference engine's to rounding.
How it works in more detail, and its measured speed: docs/engines.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lstmkit.cells.base import (
    Cell,
    CellOptions,
    LayerParams,
    input_projection,
    recurrent_projection,
)
from lstmkit.cells.gates import lstm_layout, split
from lstmkit.cells.gru import gru_pointwise
from lstmkit.cells.regularizers import StepMasks, zoneout
from lstmkit.cells.rnn import rnn_pointwise
from lstmkit.engines.base import Engine, RecurrentCall, RecurrentResult
from lstmkit.engines.fused_gru import gru_backward, rnn_backward
from lstmkit.engines.fused_lstm import lstm_backward, lstm_forward
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
    return_trace: bool  # return the c states and the gates as outputs too

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


def step_function(cfg: DirectionConfig, xp: Tensor):
    """GRU / RNN: the per-step computation (B, G*H) -> new state and gates, with the
    loop-invariant work done once: W_hh^T made contiguous (a faster matmul every step).
    Returns (step, hps): step(t, h_in, state) -> (new state, gates, hp); hps is the
    (T, B, G*H) stack the GRU step writes its projections into, else None. The pointwise math
    is the cells' own functions."""
    cell, opts, p = cfg.cell, cfg.opts, cfg.p
    w_t = p.w_hh.t().contiguous()  # (H_out, G*H)
    if p.ln_hh is not None:  # the layer norm needs W_hh h on its own: the readable path

        def generic(t, h_in, state):
            hp = recurrent_projection(h_in, p)
            return *cell.step(xp[t], hp, state, p, opts), hp

        return generic, None
    if cell.name == "GRU":  # r scales W_hn h + b_hn: hp stays separate from xp
        hps = torch.empty_like(xp)  # (T, B, 3H): kept for the backward, written in place

        def gru(t, h_in, state):
            hp = hps[t]
            if p.b_hh is None:
                torch.mm(h_in, w_t, out=hp)
            else:
                torch.addmm(p.b_hh, h_in, w_t, out=hp)
            h, gates = gru_pointwise(xp[t], hp, state[0])
            return (h,), gates, hp

        return gru, hps
    # RNN: run_direction folded b_hh into xp, so the projection is one plain mm per step;
    # `buf` is reused every step (a fresh (B, H) result each step costs page faults)
    assert p.b_hh is None, "fold b_hh into the input projection (see run_direction)"
    buf = torch.empty_like(xp[0])

    def rnn(t, h_in, state):
        hp = torch.mm(h_in, w_t, out=buf)
        return (rnn_pointwise(xp[t], hp, opts.nonlinearity),), {}, None

    return rnn, None


class StepRows:
    """A (T, *) tensor filled one step at a time, allocated at the first write. Copying each
    step's result in keeps the forward's peak memory at one copy (a list stacked at the end
    holds two)."""

    def __init__(self, T: int) -> None:
        self.T, self.data = T, None

    def __setitem__(self, t: int, value: Tensor) -> None:
        if self.data is None:
            self.data = value.new_empty((self.T, *value.shape))
        self.data[t].copy_(value)


def forward_loop(cfg: DirectionConfig, xp: Tensor, state: tuple[Tensor, ...]):
    """GRU / RNN: the reference engine's time loop without autograd, keeping what backward needs
    (the LSTM has its own loop that writes in place: lstmkit.engines.fused_lstm.lstm_forward).

    Returns per-state stacks (T, B, *) of the states after each step, of the cell's new values
    before zoneout (the same stacks when zoneout is off), the gates {name: (T, B, H)}, and the
    recurrent projections (T, B, G*H) when cfg.keep_hp, else None. Indexed by time, not by order.
    """
    masks = cfg.masks
    T = xp.shape[0]
    n = len(state)
    step, hp_stack = step_function(cfg, xp)
    states = [StepRows(T) for _ in range(n)]
    news = [StepRows(T) for _ in range(n)] if cfg.zoneout_on else states
    gates = {g: StepRows(T) for g in cfg.cell.trace_gates(cfg.opts)}
    hps = StepRows(T) if cfg.keep_hp and hp_stack is None else None
    zoneout_masks = (masks.zoneout_h, masks.zoneout_c)
    zoneout_on, valid, rmask = cfg.zoneout_on, cfg.valid, masks.recurrent
    for t in range(T - 1, -1, -1) if cfg.reverse else range(T):
        h_in = state[0] if rmask is None else state[0] * rmask
        new, step_gates, hp = step(t, h_in, state)
        if zoneout_on:
            for k in range(n):
                news[k][t] = new[k]
            new = tuple(
                zoneout(old, upd, None if zm is None else zm[t], rate)
                for old, upd, zm, rate in zip(state, new, zoneout_masks, cfg.rates)
            )
        if valid is not None:  # hold the state past each sequence's end
            new = tuple(torch.where(valid[t], upd, old) for upd, old in zip(new, state))
        state = new
        for k in range(n):
            states[k][t] = state[k]
        for name, value in step_gates.items():
            gates[name][t] = value
        if hps is not None:
            hps[t] = hp
    if hps is not None:
        hp_stack = hps.data
    stacked = [s.data for s in states]
    stacked_new = [s.data for s in news]
    return stacked, stacked_new, {k: v.data for k, v in gates.items()}, hp_stack


class FusedDirection(torch.autograd.Function):
    """One layer and direction. Outputs: the h states (T, B, H_out); for LSTM the final cell
    state (B, H); with cfg.return_trace also the c states (T, B, H) [LSTM] and the gate
    activations in trace order (T, B, H) each. Gradients flow through all of them."""

    @staticmethod
    def forward(ctx, cfg: DirectionConfig, xp: Tensor, h0: Tensor, c0: Tensor | None, *weights):
        ctx.cfg = cfg
        ctx.set_materialize_grads(False)  # unused outputs (e.g. gates) arrive as None
        if c0 is not None:  # LSTM
            Hs, Cs, Cn, act, raw = lstm_forward(cfg, xp, h0, c0)
            ctx.save_for_backward(h0, c0, Hs, Cs, Cn, act, raw)
            # the final cell as a copy: the c states themselves are an output only with traces
            outs = [Hs, Cs[0 if cfg.reverse else -1].clone()]
            return tuple(outs + [Cs, act] if cfg.return_trace else outs)
        (Hs,), (Hn,), gates, hp = forward_loop(cfg, xp, (h0,))
        ctx.gate_names = tuple(gates)
        ctx.save_for_backward(h0, Hs, Hn, *gates.values(), hp)
        return (Hs, *gates.values()) if cfg.return_trace else (Hs,)

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():  # create_graph=True: our backward is not itself differentiable
            raise RuntimeError(
                "the fused engine has no double backward (create_graph=True through it would "
                "silently drop second-order terms); build the layer with engine='reference' "
                "for higher-order gradients"
            )
        cfg, saved = ctx.cfg, ctx.saved_tensors
        needs = dict(zip(("xp", "h0", "c0", *WEIGHT_FIELDS), ctx.needs_input_grad[1:]))
        grads = list(grads) + [None] * 4  # outputs without a gradient (no trace): None
        if cfg.cell.name == "LSTM":  # grads: hidden states, final c, traced c, activations
            d_states = (grads[0], grads[2], grads[1])
            g = lstm_backward(cfg, saved[0], saved[1], saved[2:], d_states, grads[3], needs)
        else:
            h0, Hs, Hn, hp = saved[0], saved[1], saved[2], saved[-1]
            gates = dict(zip(ctx.gate_names, saved[3:-1]))
            if cfg.cell.name == "GRU":
                d_gates = dict(zip(ctx.gate_names, grads[1:]))
                g = gru_backward(cfg, h0, Hs, Hn, gates, hp, grads[0], d_gates, needs)
            else:
                g = rnn_backward(cfg, h0, Hs, Hn, grads[0], needs)
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
        return_trace=call.return_trace,
    )
    fold = call.cell.name == "LSTM" or (call.cell.name == "RNN" and p.ln_hh is None)
    if fold and p.b_hh is not None:
        # xp + hp = (W_ih x + b_ih + b_hh) + LN_hh(W_hh h): adding b_hh to the input
        # projection's bias saves a (T, B, G*H) tensor and an op per step; autograd sums its
        # gradient
        p = replace(p, b_ih=p.b_ih + p.b_hh, b_hh=None)
        cfg.p = p
    xp = input_projection(x, p)  # (T, B, G*H), ordinary autograd: one matmul each way
    n = len(state)
    c0 = state[1] if n > 1 else None
    weights = [getattr(p, f) for f in WEIGHT_FIELDS]
    outs = FusedDirection.apply(cfg, xp, state[0], c0, *weights)
    H_states = outs[0]
    final = (H_states[0 if reverse else -1],) + ((outs[1],) if n > 1 else ())
    out = H_states if valid is None else torch.where(valid, H_states, 0.0)  # (T, B, H_out)
    record: dict[str, Tensor] = {}
    if call.return_trace:
        if n > 1:  # LSTM: the activation stack (T, B, G*H) in layout order, then the cells
            named = split(outs[3], lstm_layout(call.opts.coupled))
            if call.opts.coupled:  # CIFG: i = 1 - f, differentiable here (autograd adds it)
                named["i"] = 1.0 - named["f"]
            named = {g: named[g] for g in call.cell.trace_gates(call.opts)}
            named["c"] = outs[2]
        else:
            named = dict(zip(call.cell.trace_gates(call.opts), outs[1:]))
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
