"""Triton kernels of the GRU and plain RNN steps, forward and backward (see triton_common.py)."""

from __future__ import annotations

import triton
import triton.language as tl

from lstmkit.engines.triton_common import (
    _hp_block,
    _ld,
    _ln_row_backward,
    _row_stats,
    _tanh,
    _zone_keep,
)


@triton.jit
def gru_forward(
    xp_ptr,  # (B, G*H) input projection of step t: LN_ih(W_ih x_t) + b_ih
    raw_ptr,  # (B, G*H) W_hh (h_{t-1} * rmask), before LN_hh and b_hh
    bhh_ptr,  # (G*H) b_hh, or dummy (HAS_BIAS)
    lnhh_ptr,  # (G*H) gain of LN_hh, or dummy (LN)
    zh_ptr,  # (B, H_out) zoneout mask of h at step t (ZONE_H == 1), or dummy
    h_prev_ptr,  # (B, H) h_{t-1}
    valid_ptr,  # (B) int8, 1 where step t is inside the sequence (HAS_VALID), else ones / dummy
    h_ptr,  # (B, H) out: h_t
    gates_ptr,  # (B, 4H | 3H) activations i, f, g, o (i = 1 - f when COUPLED) | r, z, n (ACC)
    hpn_ptr,  # (B, H) the GRU's (W_hh h)_n + b_hn, kept for the backward (ACC)
    stats_ptr,  # (B, 4) LN_hh mean, rstd, LN_c mean, rstd (LN), or dummy
    H,  # hidden size
    rate_h,  # evaluation zoneout rate of h (ZONE_H == 2)
    HAS_BIAS: tl.constexpr,
    LN: tl.constexpr,
    ZONE_H: tl.constexpr,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    xp = xp_ptr + b * 3 * H
    raw = raw_ptr + b * 3 * H
    mean = 0.0
    rstd = 1.0
    if LN:
        mean, rstd = _row_stats(raw, j, m, H, 3, ACC)
        tl.store(stats_ptr + b * 4, mean)
        tl.store(stats_ptr + b * 4 + 1, rstd)
    r = tl.sigmoid(
        _ld(xp, j, m, ACC)
        + _hp_block(raw, bhh_ptr, lnhh_ptr, 0, j, m, H, mean, rstd, HAS_BIAS, LN, ACC)
    )
    z = tl.sigmoid(
        _ld(xp + H, j, m, ACC)
        + _hp_block(raw, bhh_ptr, lnhh_ptr, 1, j, m, H, mean, rstd, HAS_BIAS, LN, ACC)
    )
    hpn = _hp_block(raw, bhh_ptr, lnhh_ptr, 2, j, m, H, mean, rstd, HAS_BIAS, LN, ACC)
    n = _tanh(_ld(xp + 2 * H, j, m, ACC) + r * hpn)
    h_prev = _ld(h_prev_ptr + b * H, j, m, ACC)
    h_new = (1.0 - z) * n + z * h_prev
    zh = _zone_keep(zh_ptr, b, j, m, H, rate_h, ZONE_H, ACC)
    h = h_new + zh * (h_prev - h_new)
    if HAS_VALID:
        h = tl.where(tl.load(valid_ptr + b) != 0, h, h_prev)
    tl.store(h_ptr + b * H + j, h.to(h_ptr.dtype.element_ty), mask=m)
    tl.store(gates_ptr + b * 3 * H + j, r, mask=m)
    tl.store(gates_ptr + b * 3 * H + H + j, z, mask=m)
    tl.store(gates_ptr + b * 3 * H + 2 * H + j, n, mask=m)
    tl.store(hpn_ptr + b * H + j, hpn, mask=m)


@triton.jit
def gru_backward(
    dh_ptr,  # (B, H) gradient of h_t (PROJ: of o * tanh(c_hat), through W_hr already)
    gates_ptr,  # (B, 4H | 3H) activations i, f, g, o (i = 1 - f when COUPLED) | r, z, n (ACC)
    hpn_ptr,  # (B, H) the GRU's (W_hh h)_n + b_hn, kept for the backward (ACC)
    h_prev_ptr,  # (B, H) h_{t-1}
    zh_ptr,  # (B, H_out) zoneout mask of h at step t (ZONE_H == 1), or dummy
    valid_ptr,  # (B) int8, 1 where step t is inside the sequence (HAS_VALID), else ones / dummy
    raw_ptr,  # (B, G*H) W_hh (h_{t-1} * rmask), before LN_hh and b_hh
    lnhh_ptr,  # (G*H) gain of LN_hh, or dummy (LN)
    stats_ptr,  # (B, 4) LN_hh mean, rstd, LN_c mean, rstd (LN), or dummy
    dxp_ptr,  # (B, 3H) out: gradient of xp_t
    dhp_ptr,  # (B, 3H) out: gradient of the recurrent projection hp_t
    draw_ptr,  # (B, G*H) out: gradient of raw_t (through LN_hh when LN)
    dh_direct_ptr,  # (B, H_out) out: the part of dh_{t-1} that skips the matmul
    H,  # hidden size
    rate_h,  # evaluation zoneout rate of h (ZONE_H == 2)
    LN: tl.constexpr,
    ZONE_H: tl.constexpr,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    v = tl.load(valid_ptr + b) != 0  # the engine passes ones when every step is valid
    dh = _ld(dh_ptr + b * H, j, m, ACC)
    zh = _zone_keep(zh_ptr, b, j, m, H, rate_h, ZONE_H, ACC)
    d_new = tl.where(v, (1.0 - zh) * dh, 0.0)
    gates = gates_ptr + b * 3 * H
    r = _ld(gates, j, m, ACC)
    z = _ld(gates + H, j, m, ACC)
    n = _ld(gates + 2 * H, j, m, ACC)
    hpn = _ld(hpn_ptr + b * H, j, m, ACC)
    h_prev = _ld(h_prev_ptr + b * H, j, m, ACC)
    d_nx = d_new * (1.0 - z) * (1.0 - n * n)  # n's pre-activation
    d_hpn = d_nx * r
    d_r = d_nx * hpn * r * (1.0 - r)
    d_z = d_new * (h_prev - n) * z * (1.0 - z)
    tl.store(dh_direct_ptr + b * H + j, tl.where(v, zh * dh, dh) + d_new * z, mask=m)
    dxp = dxp_ptr + b * 3 * H
    dhp = dhp_ptr + b * 3 * H
    tl.store(dxp + j, d_r, mask=m)
    tl.store(dxp + H + j, d_z, mask=m)
    tl.store(dxp + 2 * H + j, d_nx, mask=m)
    tl.store(dhp + j, d_r, mask=m)
    tl.store(dhp + H + j, d_z, mask=m)
    tl.store(dhp + 2 * H + j, d_hpn, mask=m)
    if LN:
        tl.debug_barrier()
        _ln_row_backward(
            dhp,
            raw_ptr + b * 3 * H,
            lnhh_ptr,
            draw_ptr + b * 3 * H,
            j,
            m,
            H,
            tl.load(stats_ptr + b * 4),
            tl.load(stats_ptr + b * 4 + 1),
            3,
            ACC,
        )


@triton.jit
def rnn_forward(
    xp_ptr,  # (B, G*H) input projection of step t: LN_ih(W_ih x_t) + b_ih
    raw_ptr,  # (B, G*H) W_hh (h_{t-1} * rmask), before LN_hh and b_hh
    bhh_ptr,  # (G*H) b_hh, or dummy (HAS_BIAS)
    lnhh_ptr,  # (G*H) gain of LN_hh, or dummy (LN)
    zh_ptr,  # (B, H_out) zoneout mask of h at step t (ZONE_H == 1), or dummy
    h_prev_ptr,  # (B, H) h_{t-1}
    valid_ptr,  # (B) int8, 1 where step t is inside the sequence (HAS_VALID), else ones / dummy
    h_ptr,  # (B, H) out: h_t
    hnew_ptr,  # (B, H) the RNN's new h before zoneout and holding (ACC)
    stats_ptr,  # (B, 4) LN_hh mean, rstd, LN_c mean, rstd (LN), or dummy
    H,  # hidden size
    rate_h,  # evaluation zoneout rate of h (ZONE_H == 2)
    RELU: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    LN: tl.constexpr,
    ZONE_H: tl.constexpr,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    raw = raw_ptr + b * H
    mean = 0.0
    rstd = 1.0
    if LN:
        mean, rstd = _row_stats(raw, j, m, H, 1, ACC)
        tl.store(stats_ptr + b * 4, mean)
        tl.store(stats_ptr + b * 4 + 1, rstd)
    pre = _ld(xp_ptr + b * H, j, m, ACC) + _hp_block(
        raw, bhh_ptr, lnhh_ptr, 0, j, m, H, mean, rstd, HAS_BIAS, LN, ACC
    )
    if RELU:
        h_new = tl.maximum(pre, 0.0)
    else:
        h_new = _tanh(pre)
    h_prev = _ld(h_prev_ptr + b * H, j, m, ACC)
    zh = _zone_keep(zh_ptr, b, j, m, H, rate_h, ZONE_H, ACC)
    h = h_new + zh * (h_prev - h_new)
    if HAS_VALID:
        h = tl.where(tl.load(valid_ptr + b) != 0, h, h_prev)
    tl.store(h_ptr + b * H + j, h.to(h_ptr.dtype.element_ty), mask=m)
    tl.store(hnew_ptr + b * H + j, h_new, mask=m)


@triton.jit
def rnn_backward(
    dh_ptr,  # (B, H) gradient of h_t (PROJ: of o * tanh(c_hat), through W_hr already)
    hnew_ptr,  # (B, H) the RNN's new h before zoneout and holding (ACC)
    zh_ptr,  # (B, H_out) zoneout mask of h at step t (ZONE_H == 1), or dummy
    valid_ptr,  # (B) int8, 1 where step t is inside the sequence (HAS_VALID), else ones / dummy
    raw_ptr,  # (B, G*H) W_hh (h_{t-1} * rmask), before LN_hh and b_hh
    lnhh_ptr,  # (G*H) gain of LN_hh, or dummy (LN)
    stats_ptr,  # (B, 4) LN_hh mean, rstd, LN_c mean, rstd (LN), or dummy
    dpre_ptr,  # (B, G*H) out: gradient of the gate pre-activations = of xp_t
    draw_ptr,  # (B, G*H) out: gradient of raw_t (through LN_hh when LN)
    dh_direct_ptr,  # (B, H_out) out: the part of dh_{t-1} that skips the matmul
    H,  # hidden size
    rate_h,  # evaluation zoneout rate of h (ZONE_H == 2)
    RELU: tl.constexpr,
    LN: tl.constexpr,
    ZONE_H: tl.constexpr,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    v = tl.load(valid_ptr + b) != 0  # the engine passes ones when every step is valid
    dh = _ld(dh_ptr + b * H, j, m, ACC)
    zh = _zone_keep(zh_ptr, b, j, m, H, rate_h, ZONE_H, ACC)
    d_new = tl.where(v, (1.0 - zh) * dh, 0.0)
    h_new = _ld(hnew_ptr + b * H, j, m, ACC)
    if RELU:
        d_pre = tl.where(h_new > 0, d_new, 0.0)
    else:
        d_pre = d_new * (1.0 - h_new * h_new)
    tl.store(dpre_ptr + b * H + j, d_pre, mask=m)
    tl.store(dh_direct_ptr + b * H + j, tl.where(v, zh * dh, dh), mask=m)
    if LN:
        tl.debug_barrier()
        _ln_row_backward(
            dpre_ptr + b * H,
            raw_ptr + b * H,
            lnhh_ptr,
            draw_ptr + b * H,
            j,
            m,
            H,
            tl.load(stats_ptr + b * 4),
            tl.load(stats_ptr + b * 4 + 1),
            1,
            ACC,
        )
