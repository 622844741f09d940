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
    add_previous_,
    layer_norm_input_grad,
    mul_previous_,
    split_state_grad,
    sum_with_previous,
    visit_order,
)


def _sigmoid_grad_(dst: Tensor, y: Tensor) -> Tensor:
    """dst = y (1 - y), in place (no temporaries: large fresh tensors are slow on CPU)."""
    return dst.copy_(y).addcmul_(y, y, value=-1)


def _coefficients(cfg, gates: dict, c_new: Tensor, Cs: Tensor, c0: Tensor, d_gates: dict):
    """Everything of the backward that needs no carried gradient, for all T steps at once.

    Returns tc = tanh(LN_c(c)); A (T, B, G, H) with the dc -> dpre coefficients of the blocks
    before o and Co in the o block; Kd (dm -> dc, peephole term folded in); Fd (dc_t -> dc_{t-1}:
    f, plus the peephole terms); E (T, B, G, H) and Ec, Ef (the trace's own gradients) or None;
    the LN_c statistics or None.
    """
    p, coupled, reverse = cfg.p, cfg.opts.coupled, cfg.reverse
    i, f, g, o = (gates[k] for k in ("i", "f", "g", "o"))
    T, B, H = c_new.shape
    ln_stats = None
    if p.ln_c_w is not None:
        c_norm, mean, rstd = torch.native_layer_norm(c_new, [H], p.ln_c_w, p.ln_c_b, LN_EPS)
        tc = c_norm.tanh_()
        ln_stats = (mean, rstd)
    else:
        tc = torch.tanh(c_new)  # (T, B, H)
    layout = lstm_layout(coupled)
    G = len(layout)
    A = torch.empty(T, B, G, H, dtype=c_new.dtype, device=c_new.device)
    blk = {name: A[:, :, k] for k, name in enumerate(layout)}
    _sigmoid_grad_(blk["o"], o).mul_(tc)  # Co = tc o (1 - o)
    # K = o (1 - tc^2), over tc itself unless dW_hr needs tc after the loop
    K = (tc.clone() if p.w_hr is not None else tc).mul_(tc).mul_(o).neg_().add_(o)
    blk["g"].copy_(g).mul_(g).mul_(i).neg_().add_(i)  # Cg = i (1 - g^2)
    _sigmoid_grad_(blk["f"], f)
    if coupled:  # i = 1 - f: Cf = (c_{t-1} - g) f (1 - f)
        blk["f"].mul_(add_previous_(torch.neg(g), Cs, c0, reverse))
    else:
        mul_previous_(blk["f"], Cs, c0, reverse)  # Cf = c_{t-1} f (1 - f)
        _sigmoid_grad_(blk["i"], i).mul_(g)  # Ci = g i (1 - i)
    E = Ec = Ef = None
    if any(d is not None for d in d_gates.values()):
        zero = torch.zeros((), dtype=c_new.dtype, device=c_new.device)
        dG = {k: zero if d_gates.get(k) is None else d_gates[k] for k in ("i", "f", "g", "o")}
        E = torch.empty_like(A)
        E[:, :, G - 1] = dG["o"] * o * (1 - o)
        E[:, :, layout.index("g")] = dG["g"] * (1 - g * g)
        # the traced i of a coupled cell is 1 - f, so its gradient reaches f negated
        E[:, :, layout.index("f")] = (dG["f"] - dG["i"] if coupled else dG["f"]) * f * (1 - f)
        if not coupled:
            E[:, :, 0] = dG["i"] * i * (1 - i)
    Kd, Fd = (None if ln_stats is not None else K), f
    if p.w_peep is not None:  # fold the peepholes into the coefficients
        w = split(p.w_peep, peephole_layout(coupled))
        Kd = torch.mul(blk["o"], w["o"]) if ln_stats is not None else K.addcmul_(blk["o"], w["o"])
        Fd = torch.addcmul(f, blk["f"], w["f"])
        if not coupled:
            Fd.addcmul_(blk["i"], w["i"])
        if E is not None:
            Ec = E[:, :, G - 1] * w["o"]
            Ef = E[:, :, layout.index("f")] * w["f"]
            if not coupled:
                Ef += E[:, :, 0] * w["i"]
    tc = tc if p.w_hr is not None else None
    return tc, A, K, Kd, Fd, E, Ec, Ef, ln_stats


def lstm_backward(cfg, h0, c0, states, news, gates, d_states, d_gates, needs) -> dict:
    """Gradients {xp, h0, c0, w_hh, b_hh, ln_hh, w_hr, w_peep, ln_c_w, ln_c_b} (None if unused)."""
    p, coupled, reverse = cfg.p, cfg.opts.coupled, cfg.reverse
    Hs, Cs = states
    c_new = news[1]  # the cell before zoneout / length hold: what the gates and tanh saw
    T, B, H = Cs.shape
    dH, dC, d_last = d_states  # (T, B, H_out), traced c (T, B, H) or None, final c (B, H)
    tc, A, K, Kd, Fd, E, Ec, Ef, ln_stats = _coefficients(cfg, gates, c_new, Cs, c0, d_gates)
    layout = lstm_layout(coupled)
    G = len(layout)
    dpre = A  # (T, B, G, H) = d loss / d xp, written over A: step t reads A_t before writing
    a_h, a_c = cfg.keep_coefficient(0, Cs.dtype), cfg.keep_coefficient(1, Cs.dtype)
    rec = RecurrentProjectionGrad(cfg, Hs, h0)
    d_hnew = torch.empty_like(Hs) if p.w_hr is not None else None  # for dW_hr after the loop
    d_ctil = torch.empty_like(Cs) if ln_stats is not None else None  # for the LN_c gain
    order = visit_order(T, reverse)
    dh = dH[order[0]] if dH is not None else torch.zeros_like(Hs[0])
    dc = add_all(d_last, None if dC is None else dC[order[0]])
    dc = torch.zeros_like(Cs[0]) if dc is None else dc
    for k, t in enumerate(order):
        dhn, hold_h = split_state_grad(dh, a_h, t)
        dcn, hold_c = split_state_grad(dc, a_c, t)
        if d_hnew is not None:
            d_hnew[t] = dhn
            dm = dhn @ p.w_hr  # (B, P) -> (B, H)
        else:
            dm = dhn
        if d_ctil is not None:  # dc += LN_c'(dm o (1 - tc^2))
            mean, rstd = ln_stats
            dct = torch.mul(dm, K[t], out=d_ctil[t])
            dcn = dcn + layer_norm_input_grad(dct, c_new[t], mean[t], rstd[t], p.ln_c_w, p.ln_c_b)
        if Kd is not None:
            dcn = torch.addcmul(dcn, dm, Kd[t])
        if Ec is not None:
            dcn = dcn + Ec[t]
        # dpre_t = A_t * [dc, .., dc, dm]: one contiguous write (strided out= would copy)
        dp = torch.mul(A[t], torch.stack((dcn,) * (G - 1) + (dm,), dim=1), out=dpre[t])
        if E is not None:
            dp += E[t]
        dc_prev = dcn * Fd[t]
        if Ef is not None:
            dc_prev += Ef[t]
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
        m = tc.mul_(gates["o"])
        grads["w_hr"] = d_hnew.reshape(-1, d_hnew.shape[-1]).t() @ m.reshape(-1, H)
    if needs["w_peep"]:
        sums = {"o": (dpre[:, :, G - 1] * c_new).sum((0, 1))}
        for name in ("i", "f"):
            if name in layout:
                sums[name] = sum_with_previous(dpre[:, :, layout.index(name)], Cs, c0, reverse)
        grads["w_peep"] = torch.cat([sums[name] for name in peephole_layout(coupled)])
    if ln_stats is not None:
        mean, rstd = ln_stats
        if needs["ln_c_w"]:
            grads["ln_c_w"] = (c_new - mean).mul_(rstd).mul_(d_ctil).sum((0, 1))
        if needs["ln_c_b"]:
            grads["ln_c_b"] = d_ctil.sum((0, 1))
    return grads
