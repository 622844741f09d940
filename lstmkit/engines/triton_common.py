"""Triton kernels of the GPU engine: the pointwise work of one step, fused into one pass.

One program handles one sequence (row b) and a block of BLOCK hidden units. With layer norm the
statistics need a whole row, so the engine then launches BLOCK >= H (one block per row). The
equations are those of lstmkit.cells (lstm.py, gru.py, rnn.py) and lstmkit.cells.regularizers;
the recurrent matmul raw_t = W_hh (h_{t-1} * rmask) stays with cuBLAS between launches.

Arithmetic runs in ACC (float32; float64 for float64 input) whatever the storage dtype, and the
LSTM cell state is stored in ACC, so bfloat16 / float16 runs keep their cell state in float32.
Gate blocks as torch.nn: i, f, g, o (LSTM; f, g, o when coupled), r, z, n (GRU), each H wide.
Zoneout flags: 0 off, 1 a (T, B, H) mask of units that keep their value, 2 a rate (evaluation).
tanh is 2 * sigmoid(2x) - 1: sigmoid exists on every backend, the CPU interpreter included.
"""

from __future__ import annotations

import triton
import triton.language as tl

from lstmkit.cells.base import LN_EPS as _LN_EPS

# the layer norms' epsilon, the library's one constant (a Triton kernel reads globals only as
# constexpr)
LN_EPS = tl.constexpr(_LN_EPS)


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _ld(ptr, j, m, ACC: tl.constexpr):
    return tl.load(ptr + j, mask=m, other=0.0).to(ACC)


@triton.jit
def _zone_keep(z_ptr, b, j, m, H, rate, ZONE: tl.constexpr, ACC: tl.constexpr):
    """Probability-or-mask that a unit keeps its previous value (0 when zoneout is off)."""
    if ZONE == 1:
        return _ld(z_ptr + b * H, j, m, ACC)
    elif ZONE == 2:
        return tl.zeros([j.shape[0]], ACC) + rate
    else:
        return tl.zeros([j.shape[0]], ACC)


@triton.jit
def _row_stats(raw_ptr, j, m, H, G: tl.constexpr, ACC: tl.constexpr):
    """Mean and 1/std of a (G*H) row held in G blocks (needs BLOCK >= H)."""
    n = G * H
    s = tl.zeros([j.shape[0]], ACC)
    for k in tl.static_range(G):
        s += _ld(raw_ptr + k * H, j, m, ACC)
    mean = tl.sum(s, 0) / n
    q = tl.zeros([j.shape[0]], ACC)
    for k in tl.static_range(G):
        d = tl.where(m, _ld(raw_ptr + k * H, j, m, ACC) - mean, 0.0)
        q += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(q, 0) / n + LN_EPS)
    return mean, rstd


@triton.jit
def _hp_block(
    raw_ptr,
    b_ptr,
    ln_ptr,
    k,
    j,
    m,
    H,
    mean,
    rstd,
    HAS_BIAS: tl.constexpr,
    LN: tl.constexpr,
    ACC: tl.constexpr,
):
    """Block k of hp = LN_hh(raw) * gain + b_hh."""
    v = _ld(raw_ptr + k * H, j, m, ACC)
    if LN:
        v = (v - mean) * rstd * _ld(ln_ptr + k * H, j, m, ACC)
    if HAS_BIAS:
        v += _ld(b_ptr + k * H, j, m, ACC)
    return v


@triton.jit
def _ln_row_backward(
    dy_ptr, raw_ptr, ln_ptr, dx_ptr, j, m, H, mean, rstd, G: tl.constexpr, ACC: tl.constexpr
):
    """dx of y = LN(x) * gain over a (G*H) row whose dy blocks are already stored at dy_ptr."""
    n = G * H
    a = tl.zeros([j.shape[0]], ACC)
    c = tl.zeros([j.shape[0]], ACC)
    for k in tl.static_range(G):
        dyg = _ld(dy_ptr + k * H, j, m, ACC) * _ld(ln_ptr + k * H, j, m, ACC)
        xh = (_ld(raw_ptr + k * H, j, m, ACC) - mean) * rstd
        a += dyg
        c += tl.where(m, dyg * xh, 0.0)
    a_mean = tl.sum(a, 0) / n
    c_mean = tl.sum(c, 0) / n
    for k in tl.static_range(G):
        dyg = _ld(dy_ptr + k * H, j, m, ACC) * _ld(ln_ptr + k * H, j, m, ACC)
        xh = (_ld(raw_ptr + k * H, j, m, ACC) - mean) * rstd
        tl.store(dx_ptr + k * H + j, rstd * (dyg - a_mean - xh * c_mean), mask=m)


# The kernels themselves: triton_lstm.py (LSTM) and triton_gru.py (GRU and the plain RNN).
