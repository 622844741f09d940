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

from lstmkit.engines.fused_common import (
    RecurrentProjectionGrad,
    add_all,
    add_previous_,
    split_state_grad,
    visit_order,
)


def gru_backward(cfg, h0, Hs, Hn, gates, hp, dH, d_gates, needs) -> dict:
    """Gradients {xp, h0, w_hh, b_hh, ln_hh}. Hs: states (T, B, H); Hn: before zoneout."""
    T, B, H = Hs.shape
    r, z, n = gates["r"], gates["z"], gates["n"]
    hn = hp[..., 2 * H :]  # (T, B, H)
    # dhp_t = dh_new * Q_t with Q = [Cn Crn, Cz, Cn r], built in place (no big temporaries)
    Cn = torch.mul(n, n).neg_().add_(1)  # 1 - n^2
    Cn.addcmul_(Cn, z, value=-1)  # (1 - z)(1 - n^2)
    Q = torch.empty(T, B, 3, H, dtype=Hs.dtype, device=Hs.device)
    Q[:, :, 0].copy_(r).addcmul_(r, r, value=-1).mul_(hn).mul_(Cn)
    Qz = add_previous_(Q[:, :, 1].copy_(n).neg_(), Hs, h0, cfg.reverse)  # h_{t-1} - n
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
    order = visit_order(T, cfg.reverse)
    dh = dH[order[0]] if dH is not None else torch.zeros_like(Hs[0])
    for k, t in enumerate(order):
        dhn, hold = split_state_grad(dh, a_h, t)
        dp = torch.mul(Q[t], dhn.unsqueeze(1), out=dhp[t])  # (B, 3, H)
        dpn = torch.mul(dhn, Cn[t], out=dpre_n[t])
        if EQ is not None:
            dp += EQ[t]
            dpn += En[t]
        nxt = order[k + 1] if k + 1 < T else None
        dH_next = dH[nxt] if (nxt is not None and dH is not None) else None
        direct = torch.addcmul(hold, dhn, z[t]) if hold is not None else dhn * z[t]
        dh = rec.step(t, dp.view(B, 3 * H), add_all(dH_next, direct))
    dhp = dhp.view(T, B, 3 * H)
    dxp = torch.cat([dhp[..., : 2 * H], dpre_n], dim=-1)  # (T, B, 3H)
    grads = {"xp": dxp, "h0": dh}
    grads.update(rec.weight_grads(dhp, needs))
    return grads


def rnn_backward(cfg, h0, Hs, Hn, dH, needs) -> dict:
    """Gradients {xp, h0, w_hh, b_hh, ln_hh}. Hs: states (T, B, H); Hn: before zoneout."""
    T = Hs.shape[0]
    if cfg.opts.nonlinearity == "tanh":
        deriv = torch.mul(Hn, Hn).neg_().add_(1)  # 1 - h^2
    else:
        deriv = (Hn > 0).to(Hn.dtype)
    dpre = torch.empty_like(Hs)  # (T, B, H) = d loss / d xp = d loss / d hp
    a_h = cfg.keep_coefficient(0, Hs.dtype)
    rec = RecurrentProjectionGrad(cfg, Hs, h0)
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
