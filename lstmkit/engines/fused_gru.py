"""Backward through time of the GRU and the plain RNN (lstmkit.cells.gru / rnn), fused engine.

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

from lstmkit.engines.fused_common import (
    RecurrentProjectionGrad,
    add_all,
    previous_states,
    split_state_grad,
    visit_order,
)


def gru_backward(cfg, h0, Hs, Hn, gates, hp, dH, d_gates, needs) -> dict:
    """Gradients {xp, h0, w_hh, b_hh, ln_hh}. Hs: states (T, B, H); Hn: before zoneout."""
    T, B, H = Hs.shape
    r, z, n = gates["r"], gates["z"], gates["n"]
    h_prev = previous_states(Hs, h0, cfg.reverse)
    hn = hp[..., 2 * H :]  # (T, B, H)
    do_n, do_z, do_r = 1 - n * n, z * (1 - z), r * (1 - r)
    Cn, Cz, Crn = (1 - z) * do_n, (h_prev - n) * do_z, hn * do_r
    E = {k: d_gates.get(k) for k in ("r", "z", "n")}
    E = {  # a gate trace's own gradient, taken to its pre-activation
        k: None if d is None else d * deriv
        for (k, d), deriv in zip(E.items(), (do_r, do_z, do_n))
    }
    dhp = torch.empty(T, B, 3, H, dtype=Hs.dtype, device=Hs.device)  # d loss / d hp
    dpre_n = torch.empty_like(Hs)  # the n block of d loss / d xp (the r, z blocks equal dhp's)
    a_h = cfg.keep_coefficient(0, Hs.dtype)
    rec = RecurrentProjectionGrad(cfg, h_prev)
    order = visit_order(T, cfg.reverse)
    dh = dH[order[0]] if dH is not None else torch.zeros_like(Hs[0])
    for k, t in enumerate(order):
        dhn, hold = split_state_grad(dh, a_h, t)
        dp = dhp[t]  # (B, 3, H)
        dpn = torch.mul(dhn, Cn[t], out=dpre_n[t])
        if E["n"] is not None:
            dpn += E["n"][t]
        dpr = torch.mul(dpn, Crn[t], out=dp[:, 0])
        if E["r"] is not None:
            dpr += E["r"][t]
        dpz = torch.mul(dhn, Cz[t], out=dp[:, 1])
        if E["z"] is not None:
            dpz += E["z"][t]
        torch.mul(dpn, r[t], out=dp[:, 2])
        nxt = order[k + 1] if k + 1 < T else None
        dH_next = dH[nxt] if (nxt is not None and dH is not None) else None
        dh = rec.step(t, dp.view(B, 3 * H), add_all(dH_next, hold, dhn * z[t]))
    dhp = dhp.view(T, B, 3 * H)
    dxp = torch.cat([dhp[..., : 2 * H], dpre_n], dim=-1)  # (T, B, 3H)
    grads = {"xp": dxp, "h0": dh}
    grads.update(rec.weight_grads(dhp, needs))
    return grads


def rnn_backward(cfg, h0, Hs, Hn, dH, needs) -> dict:
    """Gradients {xp, h0, w_hh, b_hh, ln_hh}. Hs: states (T, B, H); Hn: before zoneout."""
    T = Hs.shape[0]
    deriv: Tensor = 1 - Hn * Hn if cfg.opts.nonlinearity == "tanh" else (Hn > 0).to(Hn.dtype)
    dpre = torch.empty_like(Hs)  # (T, B, H) = d loss / d xp = d loss / d hp
    a_h = cfg.keep_coefficient(0, Hs.dtype)
    rec = RecurrentProjectionGrad(cfg, previous_states(Hs, h0, cfg.reverse))
    order = visit_order(T, cfg.reverse)
    dh = dH[order[0]] if dH is not None else torch.zeros_like(Hs[0])
    for k, t in enumerate(order):
        dhn, hold = split_state_grad(dh, a_h, t)
        dp = torch.mul(dhn, deriv[t], out=dpre[t])
        nxt = order[k + 1] if k + 1 < T else None
        dH_next = dH[nxt] if (nxt is not None and dH is not None) else None
        dh = rec.step(t, dp, add_all(dH_next, hold))
    grads = {"xp": dpre, "h0": dh}
    grads.update(rec.weight_grads(dpre, needs))
    return grads
