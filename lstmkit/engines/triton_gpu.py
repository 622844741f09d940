"""The Triton engine: LSTM and GRU on the GPU, forward and backward, with traces.

Per layer and direction, one torch.autograd.Function runs the sequence:

forward   xp = W_ih x + b_ih for all steps as one matmul (outside the Function: autograd gives
          dW_ih and dx as one matmul each). Per step: hp = W_hh (h_{t-1} * rmask) + b_hh by cuBLAS,
          then ONE Triton kernel for all the pointwise work of the step (gates, cell update,
          length masking), which writes h_t, c_t and the gates straight into (T, B, *) buffers.
backward  per step (reverse order): one Triton kernel turns dh_t, dc_t and the saved gates into
          the gate pre-activation gradients dpre_t (into one (T, B, G*H) buffer) and the carried
          dc_{t-1}; one cuBLAS matmul gives dh_{t-1} = dpre_t W_hh. After the loop the weight
          gradients are single large matmuls: dW_hh = dpre^T h_prev over all T*B rows.

Precision: arithmetic in float32 (float64 for float64 input); the LSTM cell state is stored in
float32 for bfloat16 / float16 runs. Traces are returned detached from autograd.

Supported here: LSTM and GRU, bias or not, layers, bidirectional, lengths / packed input, dropout
between layers, recurrent dropout, weight drop, traces; float32, bfloat16, float16 (and float64).
Not yet (auto falls back to the fused engine, saying why): proj_size, peephole, coupled,
layer_norm, zoneout, the plain RNN. Needs `pip install triton` and a CUDA GPU; the tests run the
same kernels on CPU under Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmkit.cells.base import LayerParams, input_projection
from lstmkit.cells.gates import GRU_GATES, LSTM_GATES, split
from lstmkit.cells.regularizers import StepMasks
from lstmkit.engines.base import Engine, RecurrentCall, RecurrentResult
from lstmkit.engines.reference import run_stack

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (tests without a GPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _kernels():
    # Imported on first use: importing triton_kernels compiles nothing, but needs triton.
    from lstmkit.engines import triton_kernels

    return triton_kernels


def _launch(kernel, B: int, H: int, *args, has_valid: bool, acc: torch.dtype) -> None:
    block = min(triton_next_pow2(H), 256)
    grid = (B, (H + block - 1) // block)
    import triton.language as tl

    acc_tl = tl.float64 if acc == torch.float64 else tl.float32
    kernel[grid](*args, H, HAS_VALID=has_valid, ACC=acc_tl, BLOCK=block)


def triton_next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _previous(states: Tensor, s0: Tensor, reverse: bool) -> Tensor:
    """(T, B, *) states after each step -> the state each step started from."""
    first = s0.unsqueeze(0).to(states.dtype)
    return torch.cat([states[1:], first]) if reverse else torch.cat([first, states[:-1]])


class TritonDirection(torch.autograd.Function):
    """Outputs: h states (T, B, H) in the input dtype, c states (T, B, H) (LSTM; else an empty
    tensor), gates (T, B, G*H) in the accumulation dtype (not differentiable)."""

    @staticmethod
    def forward(ctx, is_lstm, reverse, valid, rmask, xp, h0, c0, w_hh, b_hh):
        k = _kernels()
        T, B, GH = xp.shape
        H = h0.shape[-1]
        acc = torch.float64 if xp.dtype == torch.float64 else torch.float32
        xp = xp.contiguous()
        hs = torch.empty(T, B, H, dtype=xp.dtype, device=xp.device)
        gates = torch.empty(T, B, GH, dtype=acc, device=xp.device)
        cs = torch.empty(T, B, H, dtype=acc, device=xp.device) if is_lstm else hs.new_empty(0)
        hn = hs.new_empty(0) if is_lstm else torch.empty(T, B, H, dtype=acc, device=xp.device)
        h = h0.contiguous()
        c = c0.to(acc).contiguous() if is_lstm else None
        has_valid = valid is not None
        for t in range(T - 1, -1, -1) if reverse else range(T):
            h_in = h if rmask is None else h * rmask
            hp = F.linear(h_in, w_hh, b_hh)  # (B, G*H): cuBLAS
            v = valid[t] if has_valid else hs
            if is_lstm:
                _launch(
                    k.lstm_forward_step,
                    B,
                    H,
                    xp[t],
                    hp,
                    h,
                    c,
                    v,
                    hs[t],
                    cs[t],
                    gates[t],
                    has_valid=has_valid,
                    acc=acc,
                )
                c = cs[t]
            else:
                _launch(
                    k.gru_forward_step,
                    B,
                    H,
                    xp[t],
                    hp,
                    h,
                    v,
                    hs[t],
                    gates[t],
                    hn[t],
                    has_valid=has_valid,
                    acc=acc,
                )
            h = hs[t]
        ctx.is_lstm, ctx.reverse, ctx.acc = is_lstm, reverse, acc
        ctx.has_bias = b_hh is not None
        ctx.save_for_backward(valid, rmask, h0, c0, w_hh, hs, cs, gates, hn)
        c_out = cs.to(xp.dtype) if is_lstm else cs
        ctx.mark_non_differentiable(gates)
        return hs, c_out, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, d_hs, d_cs, _d_gates):
        k = _kernels()
        valid, rmask, h0, c0, w_hh, hs, cs, gates, hn = ctx.saved_tensors
        is_lstm, reverse, acc = ctx.is_lstm, ctx.reverse, ctx.acc
        T, B, H = hs.shape
        GH = gates.shape[-1]
        dev = hs.device
        has_valid = valid is not None
        dh_carry = torch.zeros(B, H, dtype=acc, device=dev)
        dc = torch.zeros(B, H, dtype=acc, device=dev)
        dh_pass = torch.empty(B, H, dtype=acc, device=dev)
        dxp = torch.empty(T, B, GH, dtype=acc, device=dev)
        dhp = dxp if is_lstm else torch.empty(T, B, GH, dtype=acc, device=dev)
        h_prev = _previous(hs, h0, reverse)  # (T, B, H)
        c_prev = _previous(cs, c0, reverse) if is_lstm else None
        w = w_hh.to(acc)
        for t in range(T) if reverse else range(T - 1, -1, -1):
            dh = dh_carry if d_hs is None else dh_carry + d_hs[t].to(acc)
            v = valid[t] if has_valid else dh
            if is_lstm:
                if d_cs is not None:
                    dc += d_cs[t].to(acc)
                _launch(
                    k.lstm_backward_step,
                    B,
                    H,
                    dh.contiguous(),
                    dc,
                    gates[t],
                    cs[t],
                    c_prev[t],
                    v,
                    dxp[t],
                    dh_pass,
                    has_valid=has_valid,
                    acc=acc,
                )
            else:
                _launch(
                    k.gru_backward_step,
                    B,
                    H,
                    dh.contiguous(),
                    gates[t],
                    hn[t],
                    h_prev[t],
                    v,
                    dxp[t],
                    dhp[t],
                    dh_pass,
                    has_valid=has_valid,
                    acc=acc,
                )
            back = dhp[t] @ w  # (B, H): the one matmul of the step
            dh_carry = dh_pass + (back if rmask is None else back * rmask)
        h_in = h_prev if rmask is None else h_prev * rmask
        dw_hh = (dhp.reshape(-1, GH).t() @ h_in.reshape(-1, H).to(acc)).to(w_hh.dtype)
        db_hh = dhp.sum((0, 1)).to(w_hh.dtype) if ctx.has_bias else None
        dc0 = dc.to(c0.dtype) if is_lstm else None
        return (None, None, None, None, dxp.to(hs.dtype), dh_carry.to(h0.dtype), dc0, dw_hh, db_hh)


def run_direction(
    call: RecurrentCall,
    x: Tensor,
    state: tuple[Tensor, ...],
    p: LayerParams,
    reverse: bool,
    valid: Tensor | None,
    masks: StepMasks | None,
):
    """Same contract as lstmkit.engines.reference.run_direction."""
    is_lstm = call.cell.name == "LSTM"
    xp = input_projection(x, p)  # (T, B, G*H)
    valid_i8 = None if valid is None else valid[..., 0].to(torch.int8).contiguous()  # (T, B)
    rmask = None if masks is None else masks.recurrent
    c0 = state[1] if is_lstm else state[0].new_empty(0)
    hs, cs, gates = TritonDirection.apply(
        is_lstm, reverse, valid_i8, rmask, xp, state[0], c0, p.w_hh, p.b_hh
    )
    last = 0 if reverse else x.shape[0] - 1
    final = (hs[last], cs[last]) if is_lstm else (hs[last],)
    out = hs if valid is None else torch.where(valid, hs, 0.0)
    record: dict[str, Tensor] = {}
    if call.return_trace:
        named = split(gates.to(x.dtype), LSTM_GATES if is_lstm else GRU_GATES)
        if is_lstm:
            named["c"] = cs.detach()
        for name, value in named.items():
            record[name] = value if valid is None else torch.where(valid, value, 0.0)
        record["h"] = out
    return out, final, record


class TritonEngine(Engine):
    name = "triton"
    priority = 75  # below native (cuDNN), above the fused eager engine

    def unsupported(self, call: RecurrentCall) -> str | None:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install 'lstmkit[triton]')"
        if not call.x.is_cuda and not interpreting():
            return "the Triton engine needs a CUDA GPU"
        if call.cell.name not in ("LSTM", "GRU"):
            return "the Triton engine has LSTM and GRU kernels only"
        if call.x.dtype not in DTYPES:
            return f"dtype {call.x.dtype} is not one of {DTYPES}"
        if call.has_structural_extras or call.proj_size:
            return "proj_size / peephole / layer_norm / coupled are not in the Triton kernels yet"
        if any(z > 0 for z in call.zoneout):
            return "zoneout is not in the Triton kernels yet"
        return None

    def run(self, call: RecurrentCall) -> RecurrentResult:
        return run_stack(call, run_direction)
