"""The Triton engine: every cell and option on the GPU, forward and backward, with traces.

Per layer and direction, one PyTorch operator runs the sequence (torch.ops.lstmkit.
triton_direction, its backward triton_direction_backward; registered as lstmkit.engines.ops
describes, so torch.compile, torch.export and torch.func see single graph nodes):

forward   xp = LN_ih(W_ih x) + b_ih for all steps as one matmul (outside the operator, so
          autograd gives dW_ih and dx as one matmul each). Per step: raw = W_hh (h_{t-1} * rmask)
          by cuBLAS, then ONE Triton kernel (triton_lstm.py / triton_gru.py) for everything
          pointwise: layer norm of raw, bias, gates, peepholes, cell update, cell layer norm,
          zoneout and length masking, writing h_t, c_t and the gates straight into (T, B, *)
          buffers. With proj_size the projection W_hr is one more cuBLAS matmul per step.
backward  triton_backward.py: per step, in reverse, one kernel turns dh_t, dc_t and the saved
          gates into the gate pre-activation gradients (into one (T, B, G*H) buffer) and
          dc_{t-1}; one matmul gives dh_{t-1}. After the loop every weight gradient is one large
          matmul or reduction over all T*B rows.

Precision: arithmetic in float32 (float64 for float64 input); the LSTM cell state is kept in
float32 for bfloat16 / float16 runs. Traces are returned detached from autograd. Needs
`pip install triton` and a CUDA GPU; the tests run these kernels on CPU with Triton's
interpreter (TRITON_INTERPRET=1), which is slow and for testing only.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from lstmkit.cells.base import input_projection
from lstmkit.cells.gates import GRU_GATES, LSTM_GATES, split
from lstmkit.cells.gru import GRU_CELL
from lstmkit.cells.lstm import LSTM_CELL
from lstmkit.cells.regularizers import StepMasks
from lstmkit.cells.rnn import RNN_CELL
from lstmkit.engines.base import (
    ONNX_REFUSAL,
    DirectionCall,
    DirectionResult,
    Engine,
    RecurrentCall,
    masked,
)
from lstmkit.engines.ops import (
    absent,
    autograd_wrapper,
    loop_vmap,
    no_double_backward,
    present,
    schema_names,
    unaliased,
)
from lstmkit.engines.resets import reset_steps, restart
from lstmkit.engines.triton_launch import DTYPES, WEIGHTS, Spec, launch, or_dummy

SAVED = ("hs", "cs", "gates", "cnew", "ms", "raws", "stats", "hpn")  # the forward's buffers


# looked up once (not imported: that would choose Triton's compiler or interpreter too early)
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (tests without a GPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _spec(cell, coupled, relu, reverse, valid, reset, rmask, zoneout_h, zoneout_c, rates, H):
    masks = StepMasks(rmask, zoneout_h, zoneout_c)
    return Spec(cell, coupled, relu, reverse, valid, masks, rates, H, reset)


def _buffers(spec: Spec, xp: Tensor, h0: Tensor, w: dict) -> dict:
    """Everything the forward writes, by name (SAVED); None where a configuration has none."""
    T, B, GH = xp.shape
    H, P = spec.hidden_size, h0.shape[-1]
    dt = xp.dtype
    acc = torch.float64 if dt == torch.float64 else torch.float32
    ln, proj, lstm = w["ln_hh"] is not None, w["w_hr"] is not None, spec.cell == "LSTM"
    n_gates = {"LSTM": 4 * H, "GRU": 3 * H, "RNN": H}[spec.cell]  # LSTM: i too (traces)

    def new(width, dtype, when=True):
        return xp.new_empty(T, B, width, dtype=dtype) if when else None

    return dict(
        hs=new(P, dt),  # (T, B, H_out) hidden states
        cs=new(H, acc, lstm),  # (T, B, H) cell states
        gates=new(n_gates, acc),  # (T, B, 4H | 3H | H) activations (RNN: the new h)
        cnew=new(H, acc, lstm and spec.zone(1) != 0),  # (T, B, H) cell before zoneout
        ms=new(H, dt, proj),  # (T, B, H) o * tanh(c_hat), before W_hr
        raws=new(GH, dt, ln),  # (T, B, G*H) W_hh h_in, before LN_hh
        stats=new(4, acc, ln),  # (T, B, 4) LN_hh mean, rstd; LN_c mean, rstd
        hpn=new(H, acc, spec.cell == "GRU"),  # (T, B, H) the GRU's W_hn h + b_hn
    )


def _forward(spec: Spec, xp: Tensor, h0: Tensor, c0: Tensor, w: dict) -> dict:
    """The time loop: per step one cuBLAS matmul and one kernel. Returns _buffers filled."""
    from lstmkit.engines import triton_gru, triton_lstm

    T, B, GH = xp.shape
    H = spec.hidden_size
    buf = _buffers(spec, xp, h0, w)
    acc = buf["gates"].dtype
    ln, proj, lstm = w["ln_hh"] is not None, w["w_hr"] is not None, spec.cell == "LSTM"
    dummy = torch.zeros(1, dtype=acc, device=xp.device)
    hs, cs, gates, cnew, ms, raws, stats, hpn = (or_dummy(buf[k], dummy) for k in SAVED)
    xp = xp.contiguous()
    zh, zc, rmask = spec.masks.zoneout_h, spec.masks.zoneout_c, spec.masks.recurrent
    h, c = h0.contiguous(), (c0.to(acc).contiguous() if lstm else dummy)
    initial, restarts = (h, c), reset_steps(spec.reset)
    for t in range(T - 1, -1, -1) if spec.reverse else range(T):
        h, c = restart(t, restarts, spec.reset, initial, (h, c))  # per-sample resets
        h_in = h if rmask is None else h * rmask
        raw = torch.mm(h_in, w["w_hh"].t(), out=raws[t]) if ln else h_in @ w["w_hh"].t()
        v = spec.valid[t] if spec.valid is not None else dummy
        step = dict(
            xp_ptr=xp[t], raw_ptr=raw, bhh_ptr=or_dummy(w["b_hh"], dummy),
            lnhh_ptr=or_dummy(w["ln_hh"], dummy), zh_ptr=zh[t] if zh is not None else dummy,
            h_prev_ptr=h, valid_ptr=v, h_ptr=hs[t], stats_ptr=stats[t] if ln else dummy, H=H,
            rate_h=spec.rates[0], HAS_BIAS=w["b_hh"] is not None, LN=ln, ZONE_H=spec.zone(0),
        )  # fmt: skip
        if lstm:
            launch(
                triton_lstm.lstm_forward, spec, B, ln=ln, acc=acc, **step,
                peep_ptr=or_dummy(w["w_peep"], dummy), lncw_ptr=or_dummy(w["ln_c_w"], dummy),
                lncb_ptr=or_dummy(w["ln_c_b"], dummy),
                zc_ptr=zc[t] if zc is not None else dummy, c_prev_ptr=c, c_ptr=cs[t],
                cnew_ptr=cnew[t] if spec.zone(1) else dummy, m_ptr=ms[t] if proj else dummy,
                gates_ptr=gates[t], rate_c=spec.rates[1], G=GH // H, COUPLED=spec.coupled,
                PEEP=w["w_peep"] is not None, ZONE_C=spec.zone(1), PROJ=proj,
            )  # fmt: skip
            if proj:  # h = W_hr out, then zoneout and holding, on the projected state
                h_new = ms[t] @ w["w_hr"].t()
                h_new = torch.lerp(h_new, h, spec.keep(0, t, h_new)) if spec.zone(0) else h_new
                hs[t] = h_new if spec.valid is None else torch.where(v[:, None] != 0, h_new, h)
            c = cs[t]
        elif spec.cell == "GRU":
            launch(triton_gru.gru_forward, spec, B, ln=ln, acc=acc, **step,
                   gates_ptr=gates[t], hpn_ptr=hpn[t])  # fmt: skip
        else:
            launch(triton_gru.rnn_forward, spec, B, ln=ln, acc=acc, **step,
                   hnew_ptr=gates[t], RELU=spec.relu)  # fmt: skip
        h = hs[t]
    return buf


@torch.library.custom_op("lstmkit::triton_direction", mutates_args=())
def triton_direction(
    xp: Tensor,  # (T, B, G*H) LN_ih(W_ih x) + b_ih
    h0: Tensor,  # (B, H_out)
    c0: Tensor,  # (B, H) for LSTM, else (0,)
    w_hh: Tensor,  # (G*H, H_out)
    b_hh: Tensor | None,  # (G*H)
    ln_hh: Tensor | None,  # (G*H) gain of LN_hh
    w_peep: Tensor | None,  # ((G-1)*H) peepholes i, f, o (f, o when coupled)
    ln_c_w: Tensor | None,  # (H) LN_c gain
    ln_c_b: Tensor | None,  # (H) LN_c shift
    w_hr: Tensor | None,  # (H_out, H) projection
    rmask: Tensor | None,  # (B, H_out) recurrent dropout mask
    valid: Tensor | None,  # (T, B) int8, 1 inside each sequence
    reset: Tensor | None,  # (T, B, 1) bool: the state entering step t is (h0, c0)
    zoneout_h: Tensor | None,  # (T, B, H_out) training zoneout mask (1 = keep)
    zoneout_c: Tensor | None,  # (T, B, H)
    rate_h: float,  # evaluation zoneout rates (0 in training)
    rate_c: float,
    cell: str,  # "LSTM", "GRU" or "RNN"
    coupled: bool,
    relu: bool,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> the SAVED buffers (shapes in _buffers), (0,) where a configuration has none."""
    H = c0.shape[-1] if cell == "LSTM" else h0.shape[-1]
    spec = _spec(cell, coupled, relu, reverse, valid, reset, rmask, zoneout_h, zoneout_c,
                 (rate_h, rate_c), H)  # fmt: skip
    w = dict(w_hh=w_hh, b_hh=b_hh, ln_hh=ln_hh, w_peep=w_peep, ln_c_w=ln_c_w, ln_c_b=ln_c_b,
             w_hr=w_hr)  # fmt: skip
    buf = _forward(spec, xp, h0, c0, w)
    return tuple(present(buf[k], xp) for k in SAVED)


@triton_direction.register_fake
def _(xp, h0, c0, w_hh, b_hh, ln_hh, w_peep, ln_c_w, ln_c_b, w_hr, rmask, valid, reset,
      zoneout_h, zoneout_c, rate_h, rate_c, cell, coupled, relu, reverse):  # fmt: skip
    H = c0.shape[-1] if cell == "LSTM" else h0.shape[-1]
    spec = _spec(cell, coupled, relu, reverse, valid, reset, rmask, zoneout_h, zoneout_c,
                 (rate_h, rate_c), H)  # fmt: skip
    w = dict(ln_hh=ln_hh, w_hr=w_hr)
    buf = _buffers(spec, xp, h0, w)
    return tuple(present(buf[k], xp) for k in SAVED)


@torch.library.custom_op("lstmkit::triton_direction_backward", mutates_args=())
def triton_direction_backward(
    d_hs: Tensor | None,  # (T, B, H_out) gradient of the hidden states
    d_cs: Tensor | None,  # (T, B, H) of the cell states (LSTM)
    h0: Tensor,
    c0: Tensor,
    xp: Tensor,
    hs: Tensor,  # triton_direction's outputs (SAVED order)
    cs: Tensor,
    gates: Tensor,
    cnew: Tensor,
    ms: Tensor,
    raws: Tensor,
    stats: Tensor,
    hpn: Tensor,
    w_hh: Tensor,  # and its inputs, as there
    b_hh: Tensor | None,
    ln_hh: Tensor | None,
    w_peep: Tensor | None,
    ln_c_w: Tensor | None,
    ln_c_b: Tensor | None,
    w_hr: Tensor | None,
    rmask: Tensor | None,
    valid: Tensor | None,
    reset: Tensor | None,
    zoneout_h: Tensor | None,
    zoneout_c: Tensor | None,
    rate_h: float,
    rate_c: float,
    cell: str,
    coupled: bool,
    relu: bool,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> d xp, d h0, d c0 ((0,) unless LSTM), then d of each of WEIGHTS ((0,) where absent)."""
    from lstmkit.engines.triton_backward import direction_backward

    H = c0.shape[-1] if cell == "LSTM" else h0.shape[-1]
    spec = _spec(cell, coupled, relu, reverse, valid, reset, rmask, zoneout_h, zoneout_c,
                 (rate_h, rate_c), H)  # fmt: skip
    saved = dict(zip(SAVED, (hs, cs, gates, cnew, ms, raws, stats, hpn)))
    saved = {k: absent(v) for k, v in saved.items()}
    w = dict(w_hh=w_hh, b_hh=b_hh, ln_hh=ln_hh, w_peep=w_peep, ln_c_w=ln_c_w, ln_c_b=ln_c_b,
             w_hr=w_hr)  # fmt: skip
    dxp, dh0, dc0, *dw = direction_backward(spec, h0, c0, xp, saved, w, d_hs, d_cs)
    outputs = (dxp, dh0, present(dc0, h0), *(present(g, w_hh) for g in dw))
    return unaliased(outputs, (d_hs, d_cs, h0, c0, xp, hs, cs, gates, w_hh, b_hh, ln_hh))


@triton_direction_backward.register_fake
def _(d_hs, d_cs, h0, c0, xp, hs, cs, gates, cnew, ms, raws, stats, hpn, w_hh, b_hh, ln_hh,
      w_peep, ln_c_w, ln_c_b, w_hr, rmask, valid, reset, zoneout_h, zoneout_c, rate_h, rate_c,
      cell, coupled, relu, reverse):  # fmt: skip
    given = (w_hh, b_hh, ln_hh, w_peep, ln_c_w, ln_c_b, w_hr)
    dw = [torch.empty_like(g) if g is not None else w_hh.new_empty(0) for g in given]
    dc0 = torch.empty_like(c0) if cell == "LSTM" else h0.new_empty(0)
    return (torch.empty_like(xp), torch.empty_like(h0), dc0, *dw)


INPUTS = schema_names(triton_direction)


class TritonDirection(torch.autograd.Function):
    """Differentiable lstmkit::triton_direction (inputs in INPUTS order); the hidden and cell
    states carry gradients, the other buffers (gates included: traces are detached) do not."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args):
        return torch.ops.lstmkit.triton_direction(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*output[2:])
        a = dict(zip(INPUTS, inputs))
        ctx.given = {k: a[k] is not None for k in WEIGHTS}
        ctx.flags = tuple(a[k] for k in INPUTS[-6:])  # rates, cell, coupled, relu, reverse
        masks = ("rmask", "valid", "reset", "zoneout_h", "zoneout_c")
        ctx.save_for_backward(a["h0"], a["c0"], a["xp"], *output, *(a[k] for k in WEIGHTS),
                              *(a[k] for k in masks))  # fmt: skip

    @staticmethod
    def backward(ctx, d_hs, d_cs, *_):
        h0, c0, xp, *rest = ctx.saved_tensors
        with torch.no_grad():
            g = torch.ops.lstmkit.triton_direction_backward(d_hs, d_cs, h0, c0, xp, *rest,
                                                            *ctx.flags)  # fmt: skip
        grads = dict(zip(("xp", "h0", "c0"), g[:3]))
        grads.update({k: v for k, v in zip(WEIGHTS, g[3:]) if ctx.given[k]})
        if ctx.flags[2] != "LSTM":
            grads["c0"] = None
        return no_double_backward("triton", rest[0], [grads.get(k) for k in INPUTS])


triton_direction.register_autograd(
    TritonDirection.backward, setup_context=TritonDirection.setup_context
)
for _op in (triton_direction, triton_direction_backward):
    _op.register_vmap(loop_vmap(_op))


def run_direction(call: RecurrentCall, d: DirectionCall) -> DirectionResult:
    """One layer and direction (the Engine contract's run_direction)."""
    x, state, p, valid = d.x, d.state, d.params, d.valid
    cell = call.cell.name
    rate_h, rate_c = call.eval_zoneout
    xp = input_projection(x, p)  # (T, B, G*H)
    named = dict(
        xp=xp, h0=state[0], c0=state[1] if len(state) > 1 else state[0].new_empty(0),
        rmask=d.masks.recurrent, zoneout_h=d.masks.zoneout_h, zoneout_c=d.masks.zoneout_c,
        valid=None if valid is None else valid[..., 0].to(torch.int8).contiguous(),
        reset=d.reset,
        rate_h=rate_h, rate_c=rate_c, cell=cell, coupled=call.opts.coupled,
        relu=call.opts.nonlinearity == "relu", reverse=d.reverse,
    ) | {k: getattr(p, k) for k in WEIGHTS}  # fmt: skip
    args = [named[k] for k in INPUTS]
    if autograd_wrapper(args):
        hs, cs, gates, *_ = TritonDirection.apply(*args)
    else:  # under torch.compile with no gradient wanted (see ops.autograd_wrapper)
        hs, cs, gates, *_ = torch.ops.lstmkit.triton_direction(*args)
    last = 0 if d.reverse else x.shape[0] - 1
    lstm = cell == "LSTM"
    final = (hs[last], cs[last].to(x.dtype)) if lstm else (hs[last],)
    out = masked(hs, valid)
    record: dict[str, Tensor] = {}
    if call.return_trace:
        names = {"LSTM": LSTM_GATES, "GRU": GRU_GATES}.get(cell, ())
        named_gates = split(gates.to(x.dtype), names) if names else {}
        if lstm:
            named_gates["c"] = cs.detach().to(x.dtype)
        record = {name: masked(value, valid) for name, value in named_gates.items()}
        record["h"] = out
    return DirectionResult(out, final, record)


# The cells these kernels compute; any other cell is unsupported.
KERNELS = {LSTM_CELL: "LSTM", GRU_CELL: "GRU", RNN_CELL: "RNN"}


class TritonEngine(Engine):
    name = "triton"
    priority = 75  # below native (cuDNN, exact torch), above the fused eager engine
    supports_resets = True

    def unsupported(self, call: RecurrentCall) -> str | None:
        if torch.onnx.is_in_onnx_export():
            return ONNX_REFUSAL
        if call.cell not in KERNELS:
            return f"no Triton kernel for the {call.cell.name} cell (it knows LSTM, GRU, RNN)"
        if not call.x.is_cuda and not interpreting():  # cheap checks first: auto asks per call
            return "the Triton engine needs a CUDA GPU"
        if not TRITON_INSTALLED:
            return "triton is not installed (pip install 'lstmkit[triton]')"
        if call.x.dtype not in DTYPES:
            return f"dtype {call.x.dtype} is not one of {DTYPES}"
        return None

    def run_direction(self, call: RecurrentCall, d: DirectionCall) -> DirectionResult:
        return run_direction(call, d)
