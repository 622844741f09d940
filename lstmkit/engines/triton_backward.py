"""Backward through time of the Triton engine (see lstmkit.engines.triton_gpu for the forward).

Per step, in reverse processing order: one kernel (the *_backward of triton_lstm /
triton_gru) gives the gradient of the gate pre-activations and of the raw recurrent matmul
(through LN_hh when on), the carried dc_{t-1}, and the part of dh_{t-1} that skips the matmul
(zoneout, the GRU's z * h path, held steps); one matmul adds draw_t W_hh (times the
recurrent-dropout mask). With proj_size the hidden side (zoneout, holding, W_hr) is done here
in torch around the kernel.

After the loop, every parameter gradient is one large matmul or reduction over T*B rows:
    dW_hh = draw^T h_in      db_hh = sum dpre       d gain_hh = sum dpre * xhat_hh
    d peephole = sum dpre_gate * c                  d gain_c, d shift_c from the cell layer norm
    dW_hr = dh_new^T out     dxp = dpre (autograd then gives dW_ih, db_ih and dx)
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.gates import lstm_layout, peephole_layout, split
from lstmkit.engines.resets import ResetGrad, entering_states, reset_steps
from lstmkit.engines.triton_launch import WEIGHTS, Spec, launch, or_dummy


def _ln_gain_grad(dy: Tensor, raw: Tensor, stats: Tensor, lo: int) -> Tensor:
    """sum over (T, B) of dy * xhat, xhat = (raw - mean) * rstd with stats[..., lo:lo+2]."""
    xhat = (raw.to(dy.dtype) - stats[..., lo : lo + 1]) * stats[..., lo + 1 : lo + 2]
    return (dy * xhat).sum((0, 1))


def direction_backward(
    spec: Spec, h0: Tensor, c0: Tensor, xp: Tensor, saved: dict, w: dict, d_hs, d_cs
) -> tuple[Tensor | None, ...]:
    """Gradients (xp, h0, c0 or None, *WEIGHTS (None where absent)) from the forward's buffers
    `saved` (triton_gpu.SAVED, None where absent), the weights `w` and the gradients of the
    hidden states d_hs (T, B, H_out) and cell states d_cs (T, B, H) (None: unused)."""
    from lstmkit.engines import triton_gru, triton_lstm

    hs, cs, gates = saved["hs"], saved["cs"], saved["gates"]
    cnew, ms, raws, stats, hpn = (saved[k] for k in ("cnew", "ms", "raws", "stats", "hpn"))
    T, B, GH = xp.shape
    H, P = spec.hidden_size, hs.shape[-1]
    dev = hs.device
    acc = gates.dtype
    ln, proj, lstm = w["ln_hh"] is not None, w["w_hr"] is not None, spec.cell == "LSTM"
    dummy = torch.zeros(1, dtype=acc, device=dev)
    all_valid = torch.ones(B, dtype=torch.int8, device=dev)  # what the kernels read without lengths
    rmask = spec.masks.recurrent
    zh, zc = spec.masks.zoneout_h, spec.masks.zoneout_c

    dpre = torch.empty(T, B, GH, dtype=acc, device=dev)  # gradient of xp
    dhp = torch.empty(T, B, GH, dtype=acc, device=dev) if spec.cell == "GRU" else dpre
    draw = torch.empty(T, B, GH, dtype=acc, device=dev) if ln else dhp  # of W_hh h_in
    dyc = torch.empty(T, B, H, dtype=acc, device=dev) if lstm and ln else dummy
    dh_new_all = torch.empty(T, B, P, dtype=acc, device=dev) if proj else None
    dh_direct = torch.empty(B, P, dtype=acc, device=dev)
    dh_carry = torch.zeros(B, P, dtype=acc, device=dev)
    dc = torch.zeros(B, H, dtype=acc, device=dev)
    h_prev = entering_states(hs, h0, spec.reverse, spec.reset)  # (T, B, P): each step's start
    c_prev = entering_states(cs, c0, spec.reverse, spec.reset) if lstm else None
    steps = reset_steps(spec.reset)
    resets_h, resets_c = ResetGrad(spec.reset, steps), ResetGrad(spec.reset, steps)
    w_hh = w["w_hh"].to(acc)
    w_hr = w["w_hr"].to(acc) if proj else None

    for t in range(T) if spec.reverse else range(T - 1, -1, -1):
        dh = dh_carry if d_hs is None else dh_carry + d_hs[t].to(acc)
        v = spec.valid[t] if spec.valid is not None else all_valid
        step = dict(
            zh_ptr=zh[t] if zh is not None else dummy, valid_ptr=v,
            raw_ptr=raws[t] if ln else dummy, lnhh_ptr=or_dummy(w["ln_hh"], dummy),
            stats_ptr=stats[t] if ln else dummy, draw_ptr=draw[t], dh_direct_ptr=dh_direct,
            H=H, rate_h=spec.rates[0], LN=ln, ZONE_H=spec.zone(0),
        )  # fmt: skip
        if lstm:
            if d_cs is not None:
                dc += d_cs[t].to(acc)
            if proj:  # the hidden side in torch: holding, zoneout, then through W_hr
                keep = spec.keep(0, t, dh) if spec.zone(0) else 0.0
                if spec.valid is not None:  # held rows: all of dh goes straight to h_{t-1}
                    valid = v[:, None] != 0
                    dh_new = torch.where(valid, (1.0 - keep) * dh, 0.0)
                    torch.where(valid, keep * dh, dh, out=dh_direct)
                else:
                    dh_new = (1.0 - keep) * dh
                    dh_direct.copy_(keep * dh)
                dh_new_all[t] = dh_new
                dh = dh_new @ w_hr  # (B, H): gradient of o * tanh(c_hat)
            launch(
                triton_lstm.lstm_backward, spec, B, ln=ln, acc=acc, **step,
                dh_ptr=dh.contiguous(), dc_ptr=dc, gates_ptr=gates[t],
                cnew_ptr=cnew[t] if spec.zone(1) else dummy, c_prev_ptr=c_prev[t],
                zc_ptr=zc[t] if zc is not None else dummy,
                peep_ptr=or_dummy(w["w_peep"], dummy), lncw_ptr=or_dummy(w["ln_c_w"], dummy),
                lncb_ptr=or_dummy(w["ln_c_b"], dummy), dpre_ptr=dpre[t],
                dyc_ptr=dyc[t] if ln else dummy, rate_c=spec.rates[1], G=GH // H,
                COUPLED=spec.coupled, PEEP=w["w_peep"] is not None, ZONE_C=spec.zone(1),
                PROJ=proj,
            )  # fmt: skip
        elif spec.cell == "GRU":
            launch(
                triton_gru.gru_backward, spec, B, ln=ln, acc=acc, **step,
                dh_ptr=dh.contiguous(), gates_ptr=gates[t], hpn_ptr=hpn[t],
                h_prev_ptr=h_prev[t], dxp_ptr=dpre[t], dhp_ptr=dhp[t],
            )  # fmt: skip
        else:
            launch(
                triton_gru.rnn_backward, spec, B, ln=ln, acc=acc, **step,
                dh_ptr=dh.contiguous(), hnew_ptr=gates[t], dpre_ptr=dpre[t], RELU=spec.relu,
            )  # fmt: skip
        back = draw[t] @ w_hh  # (B, P): the one matmul of the step
        dh_carry = dh_direct + (back if rmask is None else back * rmask)
        if t in resets_h.steps:  # rows that entered step t afresh: their gradient goes to h0
            dh_carry = resets_h(t, dh_carry)
            if lstm:
                dc = resets_c(t, dc).contiguous()

    grads: dict[str, Tensor | None] = dict.fromkeys(WEIGHTS)
    h_in = h_prev if rmask is None else h_prev * rmask
    grads["w_hh"] = draw.reshape(-1, GH).t() @ h_in.reshape(-1, P).to(acc)
    if w["b_hh"] is not None:
        grads["b_hh"] = dhp.sum((0, 1))
    if ln:
        grads["ln_hh"] = _ln_gain_grad(dhp, raws, stats, 0)
    if lstm:
        c_new = cnew if spec.zone(1) else cs  # at held steps every gate gradient is zero
        d = split(dpre, lstm_layout(spec.coupled))
        if w["w_peep"] is not None:
            sources = {"i": c_prev, "f": c_prev, "o": c_new}
            grads["w_peep"] = torch.cat(
                [(d[g] * sources[g]).sum((0, 1)) for g in peephole_layout(spec.coupled)]
            )
        if ln:
            grads["ln_c_w"] = _ln_gain_grad(dyc, c_new, stats, 2)
            grads["ln_c_b"] = dyc.sum((0, 1))
        if proj:
            grads["w_hr"] = dh_new_all.reshape(-1, P).t() @ ms.reshape(-1, H).to(acc)
    out = [grads[f].to(w[f].dtype) if grads[f] is not None else None for f in WEIGHTS]
    dc0 = resets_c.initial(dc).to(c0.dtype) if lstm else None
    return (dpre.to(xp.dtype), resets_h.initial(dh_carry).to(h0.dtype), dc0, *out)
