"""The GRU and the plain RNN (lstmkit.cells.gru / rnn) in the fused engine: the forward time loop
(the cells' own pointwise functions under no_grad) and the backward through time.

GRU, with the forward's saved r, z, n and hn = (hp_t)_n = LN_hh(W_hh h_in)_n + b_hn:

    dpre_n = dh_new * (1 - z) * (1 - n^2)                  = dh_new * Cn
    dpre_z = dh_new * (h_{t-1} - n) * z(1-z)                = dh_new * Cz
    dpre_r = dpre_n * hn * r(1-r)                           = dpre_n * Crn
    dxp    = [dpre_r, dpre_z, dpre_n]     dhp = [dpre_r, dpre_z, dpre_n * r]
    dh_{t-1} = dh_new * z + (dhp through the recurrent projection)

RNN: dpre = dh_new * (1 - h^2) for tanh, dh_new * [h > 0] for relu; dxp = dhp = dpre.
The coefficients are computed for all steps at once before the loop, as for the LSTM.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import recurrent_projection
from lstmkit.cells.gru import gru_pointwise
from lstmkit.cells.regularizers import zoneout
from lstmkit.cells.rnn import rnn_pointwise
from lstmkit.engines.fused_common import (
    DirectionConfig,
    EditGrad,
    RecurrentProjectionGrad,
    add_previous_,
    split_state_grad,
    step_back,
    visit_order,
)
from lstmkit.engines.resets import ResetGrad, reset_steps, restart


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
    before zoneout and edits (the same stacks when neither is on), the gates {name: (T, B, H)},
    and the recurrent projections (T, B, G*H) when cfg.keep_hp, else None. Indexed by time.
    """
    masks = cfg.masks
    T = xp.shape[0]
    n = len(state)
    step, hp_stack = step_function(cfg, xp)
    states = [StepRows(T) for _ in range(n)]
    news = [StepRows(T) for _ in range(n)] if cfg.keeps_new else states
    gates = {g: StepRows(T) for g in cfg.cell.trace_gates(cfg.opts)}
    hps = StepRows(T) if cfg.keep_hp and hp_stack is None else None
    zoneout_masks = (masks.zoneout_h, masks.zoneout_c)
    zoneout_on, valid, rmask = cfg.zoneout_on, cfg.valid, masks.recurrent
    keeps_new, edited = cfg.keeps_new, cfg.edited
    initial, restarts = state, reset_steps(cfg.reset)
    for t in range(T - 1, -1, -1) if cfg.reverse else range(T):
        state = restart(t, restarts, cfg.reset, initial, state)  # per-sample resets
        h_in = state[0] if rmask is None else state[0] * rmask
        new, step_gates, hp = step(t, h_in, state)
        if keeps_new:  # what the step computed, for the backward
            for k in range(n):
                news[k][t] = new[k]
        if zoneout_on:
            new = tuple(
                zoneout(old, upd, None if zm is None else zm[t], rate)
                for old, upd, zm, rate in zip(state, new, zoneout_masks, cfg.rates)
            )
        if valid is not None:  # hold the state past each sequence's end
            new = tuple(torch.where(valid[t], upd, old) for upd, old in zip(new, state))
        if edited:  # ablation / patching
            new = tuple(cfg.edit(k, t, s) for k, s in enumerate(new))
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


def gru_backward(cfg, h0, Hs, Hn, gates, hp, dH, d_gates, needs) -> dict:
    """Gradients {xp, h0, w_hh, b_hh, ln_hh, edit_h_value}. Hs: states (T, B, H); Hn: before
    zoneout and edits."""
    T, B, H = Hs.shape
    r, z, n = gates["r"], gates["z"], gates["n"]
    hn = hp[..., 2 * H :]  # (T, B, H)
    # dhp_t = dh_new * Q_t with Q = [Cn Crn, Cz, Cn r], built in place (no big temporaries)
    Cn = torch.mul(n, n).neg_().add_(1)  # 1 - n^2
    Cn.addcmul_(Cn, z, value=-1)  # (1 - z)(1 - n^2)
    Q = torch.empty(T, B, 3, H, dtype=Hs.dtype, device=Hs.device)
    Q[:, :, 0].copy_(r).addcmul_(r, r, value=-1).mul_(hn).mul_(Cn)
    Qz = add_previous_(Q[:, :, 1].copy_(n).neg_(), Hs, h0, cfg.reverse, cfg.reset)  # h_{t-1} - n
    Qz.mul_(z).addcmul_(Qz, z, value=-1)  # (h_{t-1} - n) z (1 - z)
    Q[:, :, 2].copy_(Cn).mul_(r)
    EQ = En = None
    if any(d is not None for d in d_gates.values()):  # a gate trace's own gradient
        zero = torch.zeros((), dtype=Hs.dtype, device=Hs.device)
        dG = {k: zero if d_gates.get(k) is None else d_gates[k] for k in ("r", "z", "n")}
        En = dG["n"] * (1 - n * n)  # reaches pre_n, then r's and n's recurrent blocks
        EQ = torch.stack(
            [En * hn * r * (1 - r) + dG["r"] * r * (1 - r), dG["z"] * z * (1 - z), En * r], dim=2
        )
    dhp = Q  # (T, B, 3, H) = d loss / d hp, written over Q: step t reads Q_t before writing
    dpre_n = torch.empty_like(Hs)  # the n block of d loss / d xp (the r, z blocks equal dhp's)
    a_h = cfg.keep_coefficient(0, Hs.dtype)
    rec = RecurrentProjectionGrad(cfg, Hs, h0)
    resets = ResetGrad(cfg.reset)
    order = visit_order(T, cfg.reverse)
    dh = dH[order[0]] if dH is not None else torch.zeros_like(Hs[0])
    edit = EditGrad(cfg.edit_masks[0], Hs)  # an edited unit's gradient goes to its value
    for k, t in enumerate(order):
        dhn, hold = split_state_grad(edit(t, dh), a_h, t)
        dp = torch.mul(Q[t], dhn.unsqueeze(1), out=dhp[t])  # (B, 3, H)
        dpn = torch.mul(dhn, Cn[t], out=dpre_n[t])
        if EQ is not None:
            dp += EQ[t]
            dpn += En[t]
        nxt = order[k + 1] if k + 1 < T else None
        dH_next = dH[nxt] if (nxt is not None and dH is not None) else None
        direct = torch.addcmul(hold, dhn, z[t]) if hold is not None else dhn * z[t]
        dh = step_back(rec, resets, t, dp.view(B, 3 * H), direct, dH_next)
    dhp = dhp.view(T, B, 3 * H)
    dxp = torch.cat([dhp[..., : 2 * H], dpre_n], dim=-1)  # (T, B, 3H)
    grads = {"xp": dxp, "h0": resets.initial(dh)}
    if edit.value is not None:
        grads["edit_h_value"] = edit.value
    grads.update(rec.weight_grads(dhp, needs))
    return grads


def rnn_backward(cfg, h0, Hs, Hn, dH, needs) -> dict:
    """Gradients {xp, h0, w_hh, b_hh, ln_hh, edit_h_value}. Hs: states (T, B, H); Hn: before
    zoneout and edits."""
    T = Hs.shape[0]
    if cfg.opts.nonlinearity == "tanh":
        deriv = torch.mul(Hn, Hn).neg_().add_(1)  # 1 - h^2
    else:
        deriv = (Hn > 0).to(Hn.dtype)
    dpre = torch.empty_like(Hs)  # (T, B, H) = d loss / d xp = d loss / d hp
    a_h = cfg.keep_coefficient(0, Hs.dtype)
    rec = RecurrentProjectionGrad(cfg, Hs, h0)
    resets = ResetGrad(cfg.reset)
    order = visit_order(T, cfg.reverse)
    dh = dH[order[0]] if dH is not None else torch.zeros_like(Hs[0])
    edit = EditGrad(cfg.edit_masks[0], Hs)
    for k, t in enumerate(order):
        dhn, hold = split_state_grad(edit(t, dh), a_h, t)
        dp = torch.mul(dhn, deriv[t], out=dpre[t])
        nxt = order[k + 1] if k + 1 < T else None
        dH_next = dH[nxt] if (nxt is not None and dH is not None) else None
        dh = step_back(rec, resets, t, dp, hold, dH_next)
    grads = {"xp": dpre, "h0": resets.initial(dh)}
    if edit.value is not None:
        grads["edit_h_value"] = edit.value
    grads.update(rec.weight_grads(dpre, needs))
    return grads
