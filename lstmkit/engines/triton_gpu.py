"""The Triton engine: every cell and option on the GPU, forward and backward, with traces.

Per layer and direction, one torch.autograd.Function runs the sequence:

forward   xp = LN_ih(W_ih x) + b_ih for all steps as one matmul (outside the Function, so autograd
          gives dW_ih and dx as one matmul each). Per step: raw = W_hh (h_{t-1} * rmask) by cuBLAS,
          then ONE Triton kernel (triton_lstm.py / triton_gru.py) for everything pointwise: layer
          norm of raw, bias, gates, peepholes, cell update, cell layer norm, zoneout and length
          masking, writing h_t, c_t and the gates straight into (T, B, *) buffers. With proj_size
          the projection W_hr is one more cuBLAS matmul per step.
backward  per step, in reverse: one kernel turns dh_t, dc_t and the saved gates into the gate
          pre-activation gradients (into one (T, B, G*H) buffer) and dc_{t-1}; one matmul gives
          dh_{t-1}. After the loop every weight gradient is one large matmul or reduction over
          all T*B rows: dW_hh = draw^T h_in, and the bias, gain and peephole gradients.

Precision: arithmetic in float32 (float64 for float64 input); the LSTM cell state is kept in
float32 for bfloat16 / float16 runs. Traces are returned detached from autograd. Needs
`pip install triton` and a CUDA GPU; the tests run these kernels on CPU with Triton's
interpreter (TRITON_INTERPRET=1), which is slow and for testing only.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmkit.cells.base import input_projection
from lstmkit.cells.gates import GRU_GATES, LSTM_GATES, split
from lstmkit.cells.gru import GRU
from lstmkit.cells.lstm import LSTM
from lstmkit.cells.regularizers import StepMasks
from lstmkit.cells.rnn import RNN
from lstmkit.engines.base import (
    ONNX_REFUSAL,
    DirectionCall,
    DirectionResult,
    Engine,
    RecurrentCall,
    masked,
)

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
WEIGHTS = ("w_hh", "b_hh", "ln_hh", "w_peep", "ln_c_w", "ln_c_b", "w_hr")


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (tests without a GPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@dataclass
class Spec:
    """The constant part of one direction's run (not differentiated)."""

    cell: str  # "LSTM", "GRU" or "RNN"
    coupled: bool
    relu: bool
    reverse: bool
    valid: Tensor | None  # (T, B) int8
    masks: StepMasks
    rates: tuple[float, float]  # zoneout (hidden, cell) used in evaluation; 0 in training
    hidden_size: int

    def zone(self, which: int) -> int:
        """Kernel zoneout flag for the hidden (0) or cell (1) state: 0 off, 1 mask, 2 rate."""
        mask = (self.masks.zoneout_h, self.masks.zoneout_c)[which]
        return 1 if mask is not None else (2 if self.rates[which] > 0 else 0)

    def keep(self, which: int, t: int, like: Tensor) -> Tensor | float:
        """The zoneout keep factor at step t as a tensor or a number (host-side use)."""
        mask = (self.masks.zoneout_h, self.masks.zoneout_c)[which]
        return mask[t].to(like.dtype) if mask is not None else self.rates[which]


def _launch(kernel, spec: Spec, B: int, *args, ln: bool, acc: torch.dtype, **flags) -> None:
    import triton.language as tl

    H = spec.hidden_size
    block = 1 << max(0, (H - 1).bit_length())
    block = block if ln else min(block, 256)  # layer norm needs a whole row per program
    grid = (B, (H + block - 1) // block)
    acc_tl = tl.float64 if acc == torch.float64 else tl.float32
    kernel[grid](*args, HAS_VALID=spec.valid is not None, ACC=acc_tl, BLOCK=block, **flags)


def _previous(states: Tensor, s0: Tensor, reverse: bool) -> Tensor:
    first = s0.unsqueeze(0).to(states.dtype)
    return torch.cat([states[1:], first]) if reverse else torch.cat([first, states[:-1]])


def _or(t: Tensor | None, dummy: Tensor) -> Tensor:
    return dummy if t is None else t


class TritonDirection(torch.autograd.Function):
    """Outputs: h states (T, B, H_out), c states (T, B, H) for LSTM (else empty), and the gates
    (T, B, 4H | 3H | 0) in the accumulation dtype, not differentiable."""

    @staticmethod
    def forward(ctx, spec: Spec, xp: Tensor, h0: Tensor, c0: Tensor, *weights):
        from lstmkit.engines import triton_gru, triton_lstm

        w = dict(zip(WEIGHTS, weights))
        T, B, GH = xp.shape
        H, P = spec.hidden_size, h0.shape[-1]
        dev, dt = xp.device, xp.dtype
        acc = torch.float64 if dt == torch.float64 else torch.float32
        ln, proj = w["ln_hh"] is not None, w["w_hr"] is not None
        lstm = spec.cell == "LSTM"
        xp = xp.contiguous()
        dummy = torch.zeros(1, dtype=acc, device=dev)
        hs = torch.empty(T, B, P, dtype=dt, device=dev)
        n_gates = {"LSTM": 4 * H, "GRU": 3 * H, "RNN": H}[spec.cell]
        gates = torch.empty(T, B, n_gates, dtype=acc, device=dev)
        cs = torch.empty(T, B, H, dtype=acc, device=dev) if lstm else dummy
        cnew = torch.empty(T, B, H, dtype=acc, device=dev) if lstm and spec.zone(1) else dummy
        ms = torch.empty(T, B, H, dtype=dt, device=dev) if proj else dummy
        raws = torch.empty(T, B, GH, dtype=dt, device=dev) if ln else None
        stats = torch.empty(T, B, 4, dtype=acc, device=dev) if ln else dummy
        hpn = torch.empty(T, B, H, dtype=acc, device=dev) if spec.cell == "GRU" else dummy
        zh, zc = spec.masks.zoneout_h, spec.masks.zoneout_c
        rmask = spec.masks.recurrent
        h, c = h0.contiguous(), (c0.to(acc).contiguous() if lstm else dummy)
        for t in range(T - 1, -1, -1) if spec.reverse else range(T):
            h_in = h if rmask is None else h * rmask
            raw = torch.mm(h_in, w["w_hh"].t(), out=raws[t]) if ln else h_in @ w["w_hh"].t()
            v = spec.valid[t] if spec.valid is not None else dummy
            common = dict(
                ln=ln, acc=acc, HAS_BIAS=w["b_hh"] is not None, LN=ln, ZONE_H=spec.zone(0)
            )
            b_hh, ln_hh = _or(w["b_hh"], dummy), _or(w["ln_hh"], dummy)
            zh_t = zh[t] if zh is not None else dummy
            if lstm:
                _launch(
                    triton_lstm.lstm_forward,
                    spec,
                    B,
                    xp[t],
                    raw,
                    b_hh,
                    ln_hh,
                    _or(w["w_peep"], dummy),
                    _or(w["ln_c_w"], dummy),
                    _or(w["ln_c_b"], dummy),
                    zh_t,
                    zc[t] if zc is not None else dummy,
                    h,
                    c,
                    v,
                    hs[t],
                    cs[t],
                    cnew[t] if spec.zone(1) else dummy,
                    ms[t] if proj else dummy,
                    gates[t],
                    stats[t] if ln else dummy,
                    H,
                    spec.rates[0],
                    spec.rates[1],
                    G=GH // H,
                    COUPLED=spec.coupled,
                    PEEP=w["w_peep"] is not None,
                    ZONE_C=spec.zone(1),
                    PROJ=proj,
                    **common,
                )
                if proj:  # h = W_hr out, then zoneout and holding, on the projected state
                    h_new = ms[t] @ w["w_hr"].t()
                    h_new = torch.lerp(h_new, h, spec.keep(0, t, h_new)) if spec.zone(0) else h_new
                    hs[t] = h_new if spec.valid is None else torch.where(v[:, None] != 0, h_new, h)
                c = cs[t]
            elif spec.cell == "GRU":
                _launch(
                    triton_gru.gru_forward,
                    spec,
                    B,
                    xp[t],
                    raw,
                    b_hh,
                    ln_hh,
                    zh_t,
                    h,
                    v,
                    hs[t],
                    gates[t],
                    hpn[t],
                    stats[t] if ln else dummy,
                    H,
                    spec.rates[0],
                    **common,
                )
            else:
                _launch(
                    triton_gru.rnn_forward,
                    spec,
                    B,
                    xp[t],
                    raw,
                    b_hh,
                    ln_hh,
                    zh_t,
                    h,
                    v,
                    hs[t],
                    gates[t],
                    stats[t] if ln else dummy,
                    H,
                    spec.rates[0],
                    RELU=spec.relu,
                    **common,
                )
            h = hs[t]
        ctx.spec = spec
        ctx.save_for_backward(h0, c0, xp, hs, cs, cnew, ms, gates, raws, stats, hpn, *weights)
        c_out = cs.to(dt) if lstm else cs
        ctx.mark_non_differentiable(gates)
        return hs, c_out, gates

    @staticmethod
    @once_differentiable
    def backward(ctx, d_hs, d_cs, _d_gates):
        from lstmkit.engines import triton_backward

        return (None, *triton_backward.direction_backward(ctx, d_hs, d_cs))


def run_direction(call: RecurrentCall, d: DirectionCall) -> DirectionResult:
    """One layer and direction (the Engine contract's run_direction)."""
    x, state, p, valid = d.x, d.state, d.params, d.valid
    spec = Spec(
        cell=call.cell.name,
        coupled=call.opts.coupled,
        relu=call.opts.nonlinearity == "relu",
        reverse=d.reverse,
        valid=None if valid is None else valid[..., 0].to(torch.int8).contiguous(),
        masks=d.masks,
        rates=call.eval_zoneout,
        hidden_size=call.hidden_size,
    )
    xp = input_projection(x, p)  # (T, B, G*H)
    c0 = state[1] if len(state) > 1 else state[0].new_empty(0)
    hs, cs, gates = TritonDirection.apply(spec, xp, state[0], c0, *(getattr(p, f) for f in WEIGHTS))
    last = 0 if d.reverse else x.shape[0] - 1
    final = (hs[last], cs[last]) if spec.cell == "LSTM" else (hs[last],)
    out = masked(hs, valid)
    record: dict[str, Tensor] = {}
    if call.return_trace:
        names = {"LSTM": LSTM_GATES, "GRU": GRU_GATES}.get(spec.cell, ())
        named = split(gates.to(x.dtype), names) if names else {}
        if spec.cell == "LSTM":
            named["c"] = cs.detach()
        record = {name: masked(value, valid) for name, value in named.items()}
        record["h"] = out
    return DirectionResult(out, final, record)


# The cells these kernels compute; any other cell is unsupported.
CELLS = {LSTM: "LSTM", GRU: "GRU", RNN: "RNN"}


class TritonEngine(Engine):
    name = "triton"
    priority = 75  # below native (cuDNN, exact torch), above the fused eager engine

    def unsupported(self, call: RecurrentCall) -> str | None:
        if torch.onnx.is_in_onnx_export():
            return ONNX_REFUSAL
        if call.cell not in CELLS:
            return f"no Triton kernel for the {call.cell.name} cell (it knows LSTM, GRU, RNN)"
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install 'lstmkit[triton]')"
        if not call.x.is_cuda and not interpreting():
            return "the Triton engine needs a CUDA GPU"
        if call.x.dtype not in DTYPES:
            return f"dtype {call.x.dtype} is not one of {DTYPES}"
        return None

    def run_direction(self, call: RecurrentCall, d: DirectionCall) -> DirectionResult:
        return run_direction(call, d)
