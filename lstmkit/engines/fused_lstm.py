"""Backward through time of the LSTM cell (lstmkit.cells.lstm) for the fused engine.

With pre = xp + hp split into gate blocks and the forward's saved i, f, g, o, c:

    tc = tanh(LN_c(c_t)),  m = o * tc,  h_new = W_hr m         (LN_c, W_hr optional)
    dm        = dh_new W_hr                                     (B, H)
    dpre_o    = dm * tc * o(1-o)                                 = dm * Co
    dc_t     += LN_c'(dm * o * (1 - tc^2)) + w_co * dpre_o       (K = o (1 - tc^2))
    dpre_i    = dc_t * g * i(1-i)                                = dc_t * Ci
    dpre_f    = dc_t * c_{t-1} * f(1-f)                          = dc_t * Cf
    dpre_g    = dc_t * i * (1-g^2)                               = dc_t * Cg
    dc_{t-1}  = dc_t * f + w_ci * dpre_i + w_cf * dpre_f
With coupled gates (i = 1 - f) there is no input block and Cf = (c_{t-1} - g) f(1-f). The
coefficients Co, K, Ci, Cf, Cg do not depend on the gradient, so they are computed for all steps
at once before the loop; a gate trace's own gradient adds a term E (also precomputed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import LN_EPS
from lstmkit.cells.gates import lstm_layout, peephole_layout, split
from lstmkit.engines.fused_common import (
    RecurrentProjectionGrad,
    add_all,
    layer_norm_input_grad,
    previous_states,
    split_state_grad,
    visit_order,
)


def _coefficients(p, coupled: bool, gates: dict, c_new: Tensor, c_prev: Tensor, d_gates: dict):
    """Everything of the backward that needs no carried gradient, for all T steps at once."""
    i, f, g, o = (gates[k] for k in ("i", "f", "g", "o"))
    ln_stats = None
    if p.ln_c_w is not None:
        c_norm, mean, rstd = torch.native_layer_norm(c_new, [c_new.shape[-1]], p.ln_c_w, p.ln_c_b,
                                                     LN_EPS)
        tc = torch.tanh(c_norm)
        ln_stats = (mean, rstd)
    else:
        tc = torch.tanh(c_new)  # (T, B, H)
    do_o, do_f, do_g = o * (1 - o), f * (1 - f), 1 - g * g  # activation derivatives
    K = o * (1 - tc * tc)
    Co = tc * do_o
    if coupled:
        front = [(c_prev - g) * do_f, i * do_g]  # blocks f, g
    else:
        do_i = i * (1 - i)
        front = [g * do_i, c_prev * do_f, i * do_g]  # blocks i, f, g
    C_front = torch.stack(front, dim=2)  # (T, B, G-1, H)
    E_o = E_front = None
    if any(d is not None for d in d_gates.values()):
        zero = torch.zeros((), dtype=c_new.dtype, device=c_new.device)
        dG = {k: zero if d_gates.get(k) is None else d_gates[k] for k in ("i", "f", "g", "o")}
        E_o = dG["o"] * do_o
        if coupled:  # the traced i is 1 - f
            E_front = torch.stack([(dG["f"] - dG["i"]) * do_f, dG["g"] * do_g], dim=2)
        else:
            E_front = torch.stack([dG["i"] * do_i, dG["f"] * do_f, dG["g"] * do_g], dim=2)
    return tc, K, Co, C_front, E_o, E_front, ln_stats


def lstm_backward(cfg, h0, c0, states, news, gates, d_states, d_gates, needs) -> dict:
    """Gradients {xp, h0, c0, w_hh, b_hh, ln_hh, w_hr, w_peep, ln_c_w, ln_c_b} (None if unused)."""
    p, coupled = cfg.p, cfg.opts.coupled
    Hs, Cs = states
    c_new = news[1]  # the cell before zoneout / length hold: what the gates and tanh saw
    T, B, H = Cs.shape
    dH, dC = d_states
    c_prev = previous_states(Cs, c0, cfg.reverse)
    tc, K, Co, C_front, E_o, E_front, ln_stats = _coefficients(
        p, coupled, gates, c_new, c_prev, d_gates
    )
    f = gates["f"]
    layout = lstm_layout(coupled)
    G = len(layout)
    dpre = torch.empty(T, B, G, H, dtype=Cs.dtype, device=Cs.device)  # = d loss / d xp
    a_h, a_c = cfg.keep_coefficient(0, Cs.dtype), cfg.keep_coefficient(1, Cs.dtype)
    peep = split(p.w_peep, peephole_layout(coupled)) if p.w_peep is not None else None
    blk = {name: k for k, name in enumerate(layout)}
    rec = RecurrentProjectionGrad(cfg, previous_states(Hs, h0, cfg.reverse))
    d_hnew = torch.empty_like(Hs) if p.w_hr is not None else None  # for dW_hr after the loop
    d_ctil = torch.empty_like(Cs) if ln_stats is not None else None  # for the LN_c gain
    order = visit_order(T, cfg.reverse)
    dh = dH[order[0]] if dH is not None else torch.zeros_like(Hs[0])
    dc = dC[order[0]] if dC is not None else torch.zeros_like(Cs[0])
    for k, t in enumerate(order):
        dhn, hold_h = split_state_grad(dh, a_h, t)
        dcn, hold_c = split_state_grad(dc, a_c, t)
        if d_hnew is not None:
            d_hnew[t] = dhn
            dm = dhn @ p.w_hr  # (B, P) -> (B, H)
        else:
            dm = dhn
        dp = dpre[t]  # (B, G, H)
        dpo = torch.mul(dm, Co[t], out=dp[:, G - 1])
        if E_o is not None:
            dpo += E_o[t]
        if d_ctil is not None:
            dct = torch.mul(dm, K[t], out=d_ctil[t])
            mean, rstd = ln_stats
            dcn = dcn + layer_norm_input_grad(dct, c_new[t], mean[t], rstd[t], p.ln_c_w, p.ln_c_b)
        else:
            dcn = torch.addcmul(dcn, dm, K[t])
        if peep is not None:
            dcn = torch.addcmul(dcn, peep["o"], dpo)
        torch.mul(C_front[t], dcn.unsqueeze(1), out=dp[:, : G - 1])
        if E_front is not None:
            dp[:, : G - 1] += E_front[t]
        dc_prev = dcn * f[t]
        if peep is not None:
            dc_prev.addcmul_(peep["f"], dp[:, blk["f"]])
            if not coupled:
                dc_prev.addcmul_(peep["i"], dp[:, blk["i"]])
        if hold_c is not None:
            dc_prev += hold_c
        nxt = order[k + 1] if k + 1 < T else None
        dH_next = dH[nxt] if (nxt is not None and dH is not None) else None
        dh = rec.step(t, dp.view(B, G * H), add_all(dH_next, hold_h))
        dc = dc_prev if (nxt is None or dC is None) else dc_prev + dC[nxt]
    dxp = dpre.view(T, B, G * H)
    grads = {"xp": dxp, "h0": dh, "c0": dc}
    grads.update(rec.weight_grads(dxp, needs))
    if needs["w_hr"]:  # sum_t dh_new_t^T m_t as one matmul, m = o * tc
        m = gates["o"] * tc
        grads["w_hr"] = d_hnew.reshape(-1, d_hnew.shape[-1]).t() @ m.reshape(-1, H)
    if needs["w_peep"]:
        sums = {"o": (dpre[:, :, G - 1] * c_new).sum((0, 1))}
        for name in ("i", "f"):
            if name in blk:
                sums[name] = (dpre[:, :, blk[name]] * c_prev).sum((0, 1))
        grads["w_peep"] = torch.cat([sums[name] for name in peephole_layout(coupled)])
    if ln_stats is not None:
        mean, rstd = ln_stats
        if needs["ln_c_w"]:
            grads["ln_c_w"] = (d_ctil * ((c_new - mean) * rstd)).sum((0, 1))
        if needs["ln_c_b"]:
            grads["ln_c_b"] = d_ctil.sum((0, 1))
    return grads
