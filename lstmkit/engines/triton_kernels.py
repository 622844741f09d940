"""Triton kernels of the GPU engine: one program per (sequence, block of hidden units) per step.

Each kernel is the pointwise part of a step (lstmkit.cells.lstm / gru hold the equations; these
are the same equations, fused into one pass over memory). The recurrent matmul stays with cuBLAS
(torch.addmm) between launches. Arithmetic runs in ACC (float32, or float64 for float64 input)
whatever the storage type, and the LSTM cell state is stored in ACC: bfloat16 / float16 runs keep
their cell state in float32. Gate layout as torch.nn: i, f, g, o (LSTM) and r, z, n (GRU), each
block H wide inside a row of G*H.

tanh is written 2 * sigmoid(2x) - 1: Triton's core language has sigmoid on every backend,
including the CPU interpreter (TRITON_INTERPRET=1) the tests use.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def lstm_forward_step(
    xp_ptr,
    hp_ptr,
    h_prev_ptr,
    c_prev_ptr,
    valid_ptr,  # (B,4H) (B,4H) (B,H) (B,H) (B,)
    h_ptr,
    c_ptr,
    gates_ptr,  # out: (B,H) storage dtype, (B,H) ACC, (B,4H) ACC
    H,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    row = b * 4 * H
    pre_i = tl.load(xp_ptr + row + j, mask=m).to(ACC) + tl.load(hp_ptr + row + j, mask=m).to(ACC)
    pre_f = tl.load(xp_ptr + row + H + j, mask=m).to(ACC) + tl.load(
        hp_ptr + row + H + j, mask=m
    ).to(ACC)
    pre_g = tl.load(xp_ptr + row + 2 * H + j, mask=m).to(ACC) + tl.load(
        hp_ptr + row + 2 * H + j, mask=m
    ).to(ACC)
    pre_o = tl.load(xp_ptr + row + 3 * H + j, mask=m).to(ACC) + tl.load(
        hp_ptr + row + 3 * H + j, mask=m
    ).to(ACC)
    i = tl.sigmoid(pre_i)
    f = tl.sigmoid(pre_f)
    g = _tanh(pre_g)
    o = tl.sigmoid(pre_o)
    c_prev = tl.load(c_prev_ptr + b * H + j, mask=m).to(ACC)
    c = f * c_prev + i * g
    h = o * _tanh(c)
    if HAS_VALID:  # past the sequence's end the state is held
        v = tl.load(valid_ptr + b) != 0
        c = tl.where(v, c, c_prev)
        h = tl.where(v, h, tl.load(h_prev_ptr + b * H + j, mask=m).to(ACC))
    tl.store(c_ptr + b * H + j, c.to(c_ptr.dtype.element_ty), mask=m)
    tl.store(h_ptr + b * H + j, h.to(h_ptr.dtype.element_ty), mask=m)
    tl.store(gates_ptr + row + j, i, mask=m)
    tl.store(gates_ptr + row + H + j, f, mask=m)
    tl.store(gates_ptr + row + 2 * H + j, g, mask=m)
    tl.store(gates_ptr + row + 3 * H + j, o, mask=m)


@triton.jit
def lstm_backward_step(
    dh_ptr,
    dc_ptr,
    gates_ptr,
    c_ptr,
    c_prev_ptr,
    valid_ptr,  # dh (B,H); dc (B,H) in/out ACC
    dpre_ptr,
    dh_pass_ptr,  # out: (B,4H) ACC gradient of the gate pre-activations, (B,H) ACC
    H,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    row = b * 4 * H
    dh = tl.load(dh_ptr + b * H + j, mask=m).to(ACC)
    dc_in = tl.load(dc_ptr + b * H + j, mask=m).to(ACC)
    i = tl.load(gates_ptr + row + j, mask=m)
    f = tl.load(gates_ptr + row + H + j, mask=m)
    g = tl.load(gates_ptr + row + 2 * H + j, mask=m)
    o = tl.load(gates_ptr + row + 3 * H + j, mask=m)
    c = tl.load(c_ptr + b * H + j, mask=m).to(ACC)
    c_prev = tl.load(c_prev_ptr + b * H + j, mask=m).to(ACC)
    tc = _tanh(c)
    dc = dc_in + dh * o * (1.0 - tc * tc)  # h = o * tanh(c)
    d_i = dc * g * i * (1.0 - i)
    d_f = dc * c_prev * f * (1.0 - f)
    d_g = dc * i * (1.0 - g * g)
    d_o = dh * tc * o * (1.0 - o)
    dc_prev = dc * f
    dh_pass = tl.zeros_like(dh)
    if HAS_VALID:  # a held step passes its gradients straight through
        v = tl.load(valid_ptr + b) != 0
        d_i = tl.where(v, d_i, 0.0)
        d_f = tl.where(v, d_f, 0.0)
        d_g = tl.where(v, d_g, 0.0)
        d_o = tl.where(v, d_o, 0.0)
        dc_prev = tl.where(v, dc_prev, dc_in)
        dh_pass = tl.where(v, dh_pass, dh)
    tl.store(dc_ptr + b * H + j, dc_prev, mask=m)
    tl.store(dh_pass_ptr + b * H + j, dh_pass, mask=m)
    tl.store(dpre_ptr + row + j, d_i, mask=m)
    tl.store(dpre_ptr + row + H + j, d_f, mask=m)
    tl.store(dpre_ptr + row + 2 * H + j, d_g, mask=m)
    tl.store(dpre_ptr + row + 3 * H + j, d_o, mask=m)


@triton.jit
def gru_forward_step(
    xp_ptr,
    hp_ptr,
    h_prev_ptr,
    valid_ptr,  # (B,3H) (B,3H) (B,H) (B,)
    h_ptr,
    gates_ptr,
    hn_ptr,  # out: (B,H) storage, (B,3H) ACC, (B,H) ACC = W_hn h + b_hn
    H,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    row = b * 3 * H
    r = tl.sigmoid(
        tl.load(xp_ptr + row + j, mask=m).to(ACC) + tl.load(hp_ptr + row + j, mask=m).to(ACC)
    )
    z = tl.sigmoid(
        tl.load(xp_ptr + row + H + j, mask=m).to(ACC)
        + tl.load(hp_ptr + row + H + j, mask=m).to(ACC)
    )
    hn = tl.load(hp_ptr + row + 2 * H + j, mask=m).to(ACC)
    n = _tanh(tl.load(xp_ptr + row + 2 * H + j, mask=m).to(ACC) + r * hn)
    h_prev = tl.load(h_prev_ptr + b * H + j, mask=m).to(ACC)
    h = (1.0 - z) * n + z * h_prev
    if HAS_VALID:
        v = tl.load(valid_ptr + b) != 0
        h = tl.where(v, h, h_prev)
    tl.store(h_ptr + b * H + j, h.to(h_ptr.dtype.element_ty), mask=m)
    tl.store(gates_ptr + row + j, r, mask=m)
    tl.store(gates_ptr + row + H + j, z, mask=m)
    tl.store(gates_ptr + row + 2 * H + j, n, mask=m)
    tl.store(hn_ptr + b * H + j, hn, mask=m)


@triton.jit
def gru_backward_step(
    dh_ptr,
    gates_ptr,
    hn_ptr,
    h_prev_ptr,
    valid_ptr,  # dh (B,H) ACC: total gradient of h_t
    dxp_ptr,
    dhp_ptr,
    dh_direct_ptr,  # out: (B,3H) (B,3H) ACC, (B,H) ACC the z * dh path
    H,
    HAS_VALID: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    row = b * 3 * H
    dh = tl.load(dh_ptr + b * H + j, mask=m).to(ACC)
    r = tl.load(gates_ptr + row + j, mask=m)
    z = tl.load(gates_ptr + row + H + j, mask=m)
    n = tl.load(gates_ptr + row + 2 * H + j, mask=m)
    hn = tl.load(hn_ptr + b * H + j, mask=m)
    h_prev = tl.load(h_prev_ptr + b * H + j, mask=m).to(ACC)
    d_nx = dh * (1.0 - z) * (1.0 - n * n)  # gradient of n's pre-activation
    d_hn = d_nx * r
    d_r = d_nx * hn * r * (1.0 - r)
    d_z = dh * (h_prev - n) * z * (1.0 - z)
    dh_direct = dh * z
    if HAS_VALID:
        v = tl.load(valid_ptr + b) != 0
        d_nx = tl.where(v, d_nx, 0.0)
        d_hn = tl.where(v, d_hn, 0.0)
        d_r = tl.where(v, d_r, 0.0)
        d_z = tl.where(v, d_z, 0.0)
        dh_direct = tl.where(v, dh_direct, dh)
    tl.store(dxp_ptr + row + j, d_r, mask=m)
    tl.store(dxp_ptr + row + H + j, d_z, mask=m)
    tl.store(dxp_ptr + row + 2 * H + j, d_nx, mask=m)
    tl.store(dhp_ptr + row + j, d_r, mask=m)
    tl.store(dhp_ptr + row + H + j, d_z, mask=m)
    tl.store(dhp_ptr + row + 2 * H + j, d_hn, mask=m)
    tl.store(dh_direct_ptr + b * H + j, dh_direct, mask=m)
