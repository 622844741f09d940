"""Triton kernels of the LSTM step, forward and backward (conventions: triton_common.py)."""

from __future__ import annotations

import triton
import triton.language as tl

from lstmkit.engines.triton_common import (
    LN_EPS,
    _hp_block,
    _ld,
    _ln_row_backward,
    _row_stats,
    _tanh,
    _zone_keep,
)


@triton.jit
def lstm_forward(
    xp_ptr,  # (B, G*H) input projection of step t: LN_ih(W_ih x_t) + b_ih
    raw_ptr,  # (B, G*H) W_hh (h_{t-1} * rmask), before LN_hh and b_hh
    bhh_ptr,  # (G*H) b_hh, or dummy (HAS_BIAS)
    lnhh_ptr,  # (G*H) gain of LN_hh, or dummy (LN)
    peep_ptr,  # ((G-1)*H) peepholes i, f, o (f, o when COUPLED), or dummy (PEEP)
    lncw_ptr,  # (H) gain of LN_c, or dummy (LN)
    lncb_ptr,  # (H) shift of LN_c, or dummy (LN)
    zh_ptr,  # (B, H_out) zoneout mask of h at step t (ZONE_H == 1), or dummy
    zc_ptr,  # (B, H) zoneout mask of c at step t (ZONE_C == 1), or dummy
    h_prev_ptr,  # (B, H) h_{t-1}
    c_prev_ptr,  # (B, H) c_{t-1} (ACC)
    valid_ptr,  # (B) int8, 1 where step t is inside the sequence (HAS_VALID), else ones / dummy
    h_ptr,  # (B, H) out: h_t
    c_ptr,  # (B, H) out: c_t (ACC)
    cnew_ptr,  # (B, H) out / in: the cell before zoneout (ZONE_C), or dummy
    m_ptr,  # (B, H) out: o * tanh(c_hat), before W_hr (PROJ), or dummy
    gates_ptr,  # (B, 4H | 3H) activations i, f, g, o (i = 1 - f when COUPLED) | r, z, n (ACC)
    stats_ptr,  # (B, 4) LN_hh mean, rstd, LN_c mean, rstd (LN), or dummy
    H,  # hidden size
    rate_h,  # evaluation zoneout rate of h (ZONE_H == 2)
    rate_c,  # evaluation zoneout rate of c (ZONE_C == 2)
    G: tl.constexpr,
    COUPLED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    LN: tl.constexpr,
    PEEP: tl.constexpr,
    ZONE_H: tl.constexpr,
    ZONE_C: tl.constexpr,
    PROJ: tl.constexpr,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    xp = xp_ptr + b * G * H
    raw = raw_ptr + b * G * H
    mean = 0.0
    rstd = 1.0
    if LN:
        mean, rstd = _row_stats(raw, j, m, H, G, ACC)
    kf = 0 if COUPLED else 1  # block index of f; g and o follow it
    c_prev = _ld(c_prev_ptr + b * H, j, m, ACC)
    pre_f = _ld(xp + kf * H, j, m, ACC) + _hp_block(
        raw, bhh_ptr, lnhh_ptr, kf, j, m, H, mean, rstd, HAS_BIAS, LN, ACC
    )
    if PEEP:
        pre_f += _ld(peep_ptr + (0 if COUPLED else 1) * H, j, m, ACC) * c_prev
    f = tl.sigmoid(pre_f)
    if COUPLED:
        i = 1.0 - f
    else:
        pre_i = _ld(xp, j, m, ACC) + _hp_block(
            raw, bhh_ptr, lnhh_ptr, 0, j, m, H, mean, rstd, HAS_BIAS, LN, ACC
        )
        if PEEP:
            pre_i += _ld(peep_ptr, j, m, ACC) * c_prev
        i = tl.sigmoid(pre_i)
    g = _tanh(
        _ld(xp + (kf + 1) * H, j, m, ACC)
        + _hp_block(raw, bhh_ptr, lnhh_ptr, kf + 1, j, m, H, mean, rstd, HAS_BIAS, LN, ACC)
    )
    c_new = f * c_prev + i * g
    pre_o = _ld(xp + (kf + 2) * H, j, m, ACC) + _hp_block(
        raw, bhh_ptr, lnhh_ptr, kf + 2, j, m, H, mean, rstd, HAS_BIAS, LN, ACC
    )
    if PEEP:
        pre_o += _ld(peep_ptr + (1 if COUPLED else 2) * H, j, m, ACC) * c_new
    o = tl.sigmoid(pre_o)
    c_hat = c_new
    if LN:  # layer norm of the cell over its H units (one block per row)
        mu = tl.sum(tl.where(m, c_new, 0.0), 0) / H
        dc = tl.where(m, c_new - mu, 0.0)
        rs = 1.0 / tl.sqrt(tl.sum(dc * dc, 0) / H + LN_EPS)
        c_hat = dc * rs * _ld(lncw_ptr, j, m, ACC) + _ld(lncb_ptr, j, m, ACC)
        tl.store(stats_ptr + b * 4 + 2, mu)
        tl.store(stats_ptr + b * 4 + 3, rs)
    if LN:
        tl.store(stats_ptr + b * 4, mean)
        tl.store(stats_ptr + b * 4 + 1, rstd)
    out = o * _tanh(c_hat)
    zc = _zone_keep(zc_ptr, b, j, m, H, rate_c, ZONE_C, ACC)
    c = c_new + zc * (c_prev - c_new)
    if HAS_VALID:
        v = tl.load(valid_ptr + b) != 0
        c = tl.where(v, c, c_prev)
    tl.store(c_ptr + b * H + j, c, mask=m)
    if ZONE_C != 0:
        tl.store(cnew_ptr + b * H + j, c_new, mask=m)
    if PROJ:  # h = W_hr out is a matmul: the engine does it, then zoneout and holding
        tl.store(m_ptr + b * H + j, out.to(m_ptr.dtype.element_ty), mask=m)
    else:
        h_prev = _ld(h_prev_ptr + b * H, j, m, ACC)
        zh = _zone_keep(zh_ptr, b, j, m, H, rate_h, ZONE_H, ACC)
        h = out + zh * (h_prev - out)
        if HAS_VALID:
            h = tl.where(v, h, h_prev)
        tl.store(h_ptr + b * H + j, h.to(h_ptr.dtype.element_ty), mask=m)
    gates = gates_ptr + b * 4 * H
    tl.store(gates + j, i, mask=m)
    tl.store(gates + H + j, f, mask=m)
    tl.store(gates + 2 * H + j, g, mask=m)
    tl.store(gates + 3 * H + j, o, mask=m)


@triton.jit
def lstm_backward(
    dh_ptr,  # (B, H) gradient of h_t (PROJ: of o * tanh(c_hat), through W_hr already)
    dc_ptr,  # (B, H) in: gradient of c_t; out: of c_{t-1} (ACC, in place)
    gates_ptr,  # (B, 4H | 3H) activations i, f, g, o (i = 1 - f when COUPLED) | r, z, n (ACC)
    cnew_ptr,  # (B, H) out / in: the cell before zoneout (ZONE_C), or dummy
    c_prev_ptr,  # (B, H) c_{t-1} (ACC)
    zh_ptr,  # (B, H_out) zoneout mask of h at step t (ZONE_H == 1), or dummy
    zc_ptr,  # (B, H) zoneout mask of c at step t (ZONE_C == 1), or dummy
    valid_ptr,  # (B) int8, 1 where step t is inside the sequence (HAS_VALID), else ones / dummy
    raw_ptr,  # (B, G*H) W_hh (h_{t-1} * rmask), before LN_hh and b_hh
    lnhh_ptr,  # (G*H) gain of LN_hh, or dummy (LN)
    peep_ptr,  # ((G-1)*H) peepholes i, f, o (f, o when COUPLED), or dummy (PEEP)
    lncw_ptr,  # (H) gain of LN_c, or dummy (LN)
    lncb_ptr,  # (H) shift of LN_c, or dummy (LN)
    stats_ptr,  # (B, 4) LN_hh mean, rstd, LN_c mean, rstd (LN), or dummy
    dpre_ptr,  # (B, G*H) out: gradient of the gate pre-activations = of xp_t
    draw_ptr,  # (B, G*H) out: gradient of raw_t (through LN_hh when LN)
    dh_direct_ptr,  # (B, H_out) out: the part of dh_{t-1} that skips the matmul
    dyc_ptr,  # (B, H) out: gradient of LN_c's output (LN), or dummy
    H,  # hidden size
    rate_h,  # evaluation zoneout rate of h (ZONE_H == 2)
    rate_c,  # evaluation zoneout rate of c (ZONE_C == 2)
    G: tl.constexpr,
    COUPLED: tl.constexpr,
    LN: tl.constexpr,
    PEEP: tl.constexpr,
    ZONE_H: tl.constexpr,
    ZONE_C: tl.constexpr,
    PROJ: tl.constexpr,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dh: gradient of the state h_t (or, with PROJ, of out_t = o * tanh(c_hat) already through
    W_hr and zoneout); dc: gradient of the state c_t in, of c_{t-1} out (in place)."""
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    v = tl.load(valid_ptr + b) != 0  # the engine passes ones when every step is valid
    dh = _ld(dh_ptr + b * H, j, m, ACC)
    if PROJ:
        d_out = dh
    else:
        zh = _zone_keep(zh_ptr, b, j, m, H, rate_h, ZONE_H, ACC)
        d_out = tl.where(v, (1.0 - zh) * dh, 0.0)
        tl.store(dh_direct_ptr + b * H + j, tl.where(v, zh * dh, dh), mask=m)
    dc_state = _ld(dc_ptr + b * H, j, m, ACC)
    zc = _zone_keep(zc_ptr, b, j, m, H, rate_c, ZONE_C, ACC)
    dc_new = tl.where(v, (1.0 - zc) * dc_state, 0.0)
    dc_prev = tl.where(v, zc * dc_state, dc_state)
    gates = gates_ptr + b * 4 * H
    i = _ld(gates, j, m, ACC)
    f = _ld(gates + H, j, m, ACC)
    g = _ld(gates + 2 * H, j, m, ACC)
    o = _ld(gates + 3 * H, j, m, ACC)
    c_prev = _ld(c_prev_ptr + b * H, j, m, ACC)
    if ZONE_C != 0:
        c_new = _ld(cnew_ptr + b * H, j, m, ACC)
    else:
        c_new = f * c_prev + i * g
    c_hat = c_new
    if LN:
        mu = tl.load(stats_ptr + b * 4 + 2)
        rs = tl.load(stats_ptr + b * 4 + 3)
        xc = tl.where(m, (c_new - mu) * rs, 0.0)
        gamma = _ld(lncw_ptr, j, m, ACC)
        c_hat = xc * gamma + _ld(lncb_ptr, j, m, ACC)
    tc = _tanh(c_hat)
    d_o = d_out * tc * o * (1.0 - o)
    dyc = d_out * o * (1.0 - tc * tc)
    if LN:
        tl.store(dyc_ptr + b * H + j, dyc, mask=m)
        dyg = tl.where(m, dyc * gamma, 0.0)
        a_mean = tl.sum(dyg, 0) / H
        c_mean = tl.sum(dyg * xc, 0) / H
        dc_new += rs * (dyg - a_mean - xc * c_mean)
    else:
        dc_new += dyc
    if PEEP:
        dc_new += _ld(peep_ptr + (1 if COUPLED else 2) * H, j, m, ACC) * d_o
    d_g = dc_new * i * (1.0 - g * g)
    dc_prev += dc_new * f
    kf = 0 if COUPLED else 1
    dpre = dpre_ptr + b * G * H
    if COUPLED:
        d_f = dc_new * (c_prev - g) * f * (1.0 - f)
    else:
        d_i = dc_new * g * i * (1.0 - i)
        d_f = dc_new * c_prev * f * (1.0 - f)
        tl.store(dpre + j, d_i, mask=m)
        if PEEP:
            dc_prev += _ld(peep_ptr, j, m, ACC) * d_i
    if PEEP:
        dc_prev += _ld(peep_ptr + (0 if COUPLED else 1) * H, j, m, ACC) * d_f
    tl.store(dpre + kf * H + j, d_f, mask=m)
    tl.store(dpre + (kf + 1) * H + j, d_g, mask=m)
    tl.store(dpre + (kf + 2) * H + j, d_o, mask=m)
    tl.store(dc_ptr + b * H + j, dc_prev, mask=m)
    if LN:  # gradient of the raw recurrent matmul through LN_hh (needs the stored dpre row)
        tl.debug_barrier()
        _ln_row_backward(
            dpre,
            raw_ptr + b * G * H,
            lnhh_ptr,
            draw_ptr + b * G * H,
            j,
            m,
            H,
            tl.load(stats_ptr + b * 4),
            tl.load(stats_ptr + b * 4 + 1),
            G,
            ACC,
        )
