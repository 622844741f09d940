"""The LSTM cell (lstmkit.cells.lstm) in the fused engine: the forward time loop and the
backward through time.

Forward: per step one addmm writes pre = xp_t + W_hh h_{t-1} straight into row t of the gate
stack A (T, B, G*H), lstm_pointwise_ turns it into the activations in place and writes c_t into
the cell stack, lstm_output_ writes h_t into the hidden stack: about eight torch calls and no
copies or fresh tensors per step (at small sizes each call costs more than its arithmetic).
Where they can be built, the same loops run compiled (csrc/lstm_loops.cpp via cpu_loops.py: the
matmuls and layer norms through ATen, the gate arithmetic in one vectorised pass per step); the
Python loops below are the readable version and the fallback, and the tests compare the two.

Backward, with pre = xp + hp split into gate blocks and the forward's saved i, f, g, o, c:

    tc = tanh(LN_c(c_t)),  m = o * tc,  h_new = W_hr m         (LN_c, W_hr optional)
    dm        = dh_new W_hr                                     (B, H)
    dpre_o    = dm * tc * o(1-o)                                 = dm * Co
    dc_t     += LN_c'(dm * o * (1 - tc^2)) + w_co * dpre_o       (K = o (1 - tc^2))
    dpre_i    = dc_t * g * i(1-i)                                = dc_t * Ci
    dpre_f    = dc_t * c_{t-1} * f(1-f)                          = dc_t * Cf
    dpre_g    = dc_t * i * (1-g^2)                               = dc_t * Cg
    dc_{t-1}  = dc_t * f + w_ci * dpre_i + w_cf * dpre_f
With coupled gates (i = 1 - f) there is no input block and Cf = (c_{t-1} - g) f(1-f). The
coefficients Co, K, Ci, Cf, Cg do not depend on the gradient, so they are computed for all steps
at once before the loop; a gate trace's own gradient adds a term E (also precomputed). The
compiled backward instead derives them per step from the saved activations, in the same pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import LN_EPS, layer_norm
from lstmkit.cells.gates import lstm_layout, peephole_layout, split
from lstmkit.cells.lstm import lstm_output_, lstm_pointwise_
from lstmkit.cells.regularizers import zoneout
from lstmkit.engines.cpu_loops import cpu_loops, usable
from lstmkit.engines.fused_common import (
    EditGrad,
    RecurrentProjectionGrad,
    add_all,
    add_previous_,
    layer_norm_input_grad,
    mul_previous_,
    split_state_grad,
    step_back,
    sum_with_previous,
    visit_order,
)
from lstmkit.engines.resets import ResetGrad, reset_steps, restart


def lstm_forward(cfg, xp: Tensor, h0: Tensor, c0: Tensor):
    """The time loop without autograd, writing straight into the stacks the backward needs.

    xp (T, B, G*H) holds W_ih x + b_ih + b_hh (b_hh folded in by run_direction). Returns
    Hs (T, B, H_out) and Cs (T, B, H), the states after each step; Cn (T, B, H), the cell before
    zoneout / length hold (Cs itself when neither is on); A (T, B, G*H), the gate activations in
    layout order; raw (T, B, G*H), W_hh h_in before LN_hh (kept for the backward), or None.
    Indexed by time, not by processing order.
    """
    p, masks, valid = cfg.p, cfg.masks, cfg.valid
    T, B, _ = xp.shape
    H = c0.shape[-1]
    A = xp.new_empty(xp.shape)  # contiguous whatever xp's strides (the compiled loops need it)
    Cs = xp.new_empty(T, B, H)
    Hs = xp.new_empty(T, B, h0.shape[-1])
    w_t = p.w_hh.t().contiguous()  # (H_out, G*H): the faster operand order for h @ W_hh^T
    raw = xp.new_empty(xp.shape) if p.ln_hh is not None else None
    holds = cfg.keeps_new or valid is not None  # the step's new values go to scratch first
    compiled = _compiled_loops(xp, h0, c0)
    if compiled is not None:  # the loop below, compiled (lstmkit/engines/cpu_loops.py)
        zo_h, zo_c, valid_rows = _zoneout_shares(cfg, T, B, H, h0.shape[-1])
        Cn = xp.new_empty(T, B, H) if cfg.keeps_new else None
        w_hr_t = None if p.w_hr is None else p.w_hr.t().contiguous()  # (H, P)
        compiled.lstm_forward_loop(
            xp, h0.contiguous(), c0.contiguous(), w_t, _dense(p.w_peep), masks.recurrent,
            valid_rows, _row_flags(cfg.reset), _dense(p.ln_hh), raw, _dense(p.ln_c_w),
            _dense(p.ln_c_b), zo_h, zo_c, Cn, w_hr_t, LN_EPS, cfg.opts.coupled, cfg.reverse,
            A, Cs, Hs, cfg.edit_masks[0], cfg.edit_values[0], cfg.edit_masks[1],
            cfg.edit_values[1],
        )  # fmt: skip
        # without zoneout, held rows (lengths) are never read through Cn: Cs serves
        return Hs, Cs, Cs if Cn is None else Cn, A, raw
    Cn = xp.new_empty(T, B, H) if holds else Cs
    h_new = torch.empty_like(h0) if holds else None  # (B, H_out) scratch before zoneout / hold
    work = torch.empty_like(c0)  # (B, H) scratch for tanh(c)
    zh, zc = masks.zoneout_h, masks.zoneout_c
    h, c = h0, c0
    restarts = reset_steps(cfg.reset)
    for t in range(T - 1, -1, -1) if cfg.reverse else range(T):
        h, c = restart(t, restarts, cfg.reset, (h0, c0), (h, c))  # per-sample resets
        h_in = h if masks.recurrent is None else h * masks.recurrent
        a = A[t]  # (B, G*H)
        if raw is None:
            torch.addmm(xp[t], h_in, w_t, out=a)
        else:
            torch.add(xp[t], layer_norm(torch.mm(h_in, w_t, out=raw[t]), p.ln_hh), out=a)
        gates = lstm_pointwise_(a, c, Cn[t], p.w_peep, cfg.opts.coupled)
        hn = lstm_output_(Cn[t], gates["o"], p, h_new if holds else Hs[t], work)
        if holds:
            hn = zoneout(h, hn, None if zh is None else zh[t], cfg.rates[0])
            cn = zoneout(c, Cn[t], None if zc is None else zc[t], cfg.rates[1])
            if valid is not None:  # hold the state past each sequence's end
                hn, cn = torch.where(valid[t], hn, h), torch.where(valid[t], cn, c)
            hn, cn = cfg.edit(0, t, hn), cfg.edit(1, t, cn)  # ablation / patching
            Hs[t].copy_(hn)
            Cs[t].copy_(cn)
        h, c = Hs[t], Cs[t]
    return Hs, Cs, Cn, A, raw


def _compiled_loops(*tensors: Tensor):
    """The compiled loops where they take these tensors (CPU, float32 / float64), else None."""
    return cpu_loops() if usable(*tensors) else None


def _zoneout_shares(cfg, T: int, B: int, H: int, P: int):
    """For the compiled loops: (zo_h, zo_c, valid). With zoneout, each state's share of the new
    value, (T, B, P) for h and (T, B, H) for c, lengths folded in, and valid None; else
    (None, None, valid (T, B))."""
    if not cfg.zoneout_on:
        return None, None, _row_flags(cfg.valid)
    dtype, device = cfg.p.w_hh.dtype, cfg.p.w_hh.device
    shares = []
    for which, width in ((0, P), (1, H)):
        a = cfg.keep_coefficient(which, dtype)
        a = torch.ones((), dtype=dtype, device=device) if a is None else a
        shares.append(a.expand(T, B, width).contiguous())
    return shares[0], shares[1], None


def _dense(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.contiguous()


def _dense_all(xs) -> list[Tensor | None]:
    return [_dense(x) for x in xs]


def _row_flags(flags: Tensor | None) -> Tensor | None:
    """(T, B, 1) bool (lengths or resets) -> (T, B) contiguous bool for the compiled loops."""
    return None if flags is None else flags[..., 0].contiguous()


def _sigmoid_grad_(dst: Tensor, y: Tensor) -> Tensor:
    """dst = y (1 - y), in place (no temporaries: large fresh tensors are slow on CPU)."""
    return dst.copy_(y).addcmul_(y, y, value=-1)


def _coefficients(cfg, gates: dict, c_new: Tensor, Cs: Tensor, c0: Tensor, d_act: Tensor | None):
    """Everything of the backward that needs no carried gradient, for all T steps at once.

    Returns tc = tanh(LN_c(c)); A (T, B, G, H) with the dc -> dpre coefficients of the blocks
    before o and Co in the o block; Kd (dm -> dc, peephole term folded in); Fd (dc_t -> dc_{t-1}:
    f, plus the peephole terms); E (T, B, G, H) and Ec, Ef (the trace's own gradients, from
    d_act (T, B, G*H), the gradient of the activation stack) or None; the LN_c statistics or None.
    A coupled cell's traced i = 1 - f is computed outside (autograd takes its gradient to f).
    """
    p, coupled, reverse = cfg.p, cfg.opts.coupled, cfg.reverse
    f, g, o = gates["f"], gates["g"], gates["o"]
    i = 1 - f if coupled else gates["i"]
    T, B, H = c_new.shape
    ln_stats = None
    if p.ln_c_w is not None:
        c_norm, mean, rstd = torch.native_layer_norm(c_new, [H], p.ln_c_w, p.ln_c_b, LN_EPS)
        tc = c_norm.tanh_()
        ln_stats = (mean, rstd)
    else:
        tc = torch.tanh(c_new)  # (T, B, H)
    layout = lstm_layout(coupled)
    G = len(layout)
    A = torch.empty(T, B, G, H, dtype=c_new.dtype, device=c_new.device)
    blk = {name: A[:, :, k] for k, name in enumerate(layout)}
    _sigmoid_grad_(blk["o"], o).mul_(tc)  # Co = tc o (1 - o)
    # K = o (1 - tc^2), over tc itself unless dW_hr needs tc after the loop
    K = (tc.clone() if p.w_hr is not None else tc).mul_(tc).mul_(o).neg_().add_(o)
    blk["g"].copy_(g).mul_(g).mul_(i).neg_().add_(i)  # Cg = i (1 - g^2)
    _sigmoid_grad_(blk["f"], f)
    if coupled:  # i = 1 - f: Cf = (c_{t-1} - g) f (1 - f)
        blk["f"].mul_(add_previous_(torch.neg(g), Cs, c0, reverse, cfg.reset))
    else:
        mul_previous_(blk["f"], Cs, c0, reverse, cfg.reset)  # Cf = c_{t-1} f (1 - f)
        _sigmoid_grad_(blk["i"], i).mul_(g)  # Ci = g i (1 - i)
    E = Ec = Ef = None
    if d_act is not None:  # the trace's own gradient, d loss / d activation -> d pre
        E = d_act.clone(memory_format=torch.contiguous_format).view(T, B, G, H)
        for k, name in enumerate(layout):
            act = gates[name]
            if name == "g":
                E[:, :, k].mul_(1 - act * act)
            else:
                E[:, :, k].mul_(act).mul_(1 - act)
    Kd, Fd = (None if ln_stats is not None else K), f
    if p.w_peep is not None:  # fold the peepholes into the coefficients
        w = split(p.w_peep, peephole_layout(coupled))
        Kd = torch.mul(blk["o"], w["o"]) if ln_stats is not None else K.addcmul_(blk["o"], w["o"])
        Fd = torch.addcmul(f, blk["f"], w["f"])
        if not coupled:
            Fd.addcmul_(blk["i"], w["i"])
        if E is not None:
            Ec = E[:, :, G - 1] * w["o"]
            Ef = E[:, :, layout.index("f")] * w["f"]
            if not coupled:
                Ef += E[:, :, 0] * w["i"]
    tc = tc if p.w_hr is not None else None
    return tc, A, K, Kd, Fd, E, Ec, Ef, ln_stats


def _python_chain(cfg, h0, c0, saved, rec, edits, d_seq, d_act, dh, dc):
    """The backward's time loop in eager torch: coefficients for all steps first, then per step
    the carried (dh, dc) chain. Returns dpre (T, B, G, H), the gradients of h0 and c0, and what
    the weight gradients need: d_hnew (projection), d_ctil and ln_stats (LN_c), tc."""
    p, coupled, reverse = cfg.p, cfg.opts.coupled, cfg.reverse
    Hs, Cs, c_new, act, _ = saved
    T, B, H = Cs.shape
    dH, dC = d_seq
    gates = split(act, lstm_layout(coupled))
    tc, A, K, Kd, Fd, E, Ec, Ef, ln_stats = _coefficients(cfg, gates, c_new, Cs, c0, d_act)
    G = A.shape[2]
    dpre = A  # (T, B, G, H) = d loss / d xp, written over A: step t reads A_t before writing
    a_h, a_c = cfg.keep_coefficient(0, Cs.dtype), cfg.keep_coefficient(1, Cs.dtype)
    d_hnew = torch.empty_like(Hs) if p.w_hr is not None else None  # for dW_hr after the loop
    d_ctil = torch.empty_like(Cs) if ln_stats is not None else None  # for the LN_c gain
    order = visit_order(T, reverse)
    steps = reset_steps(cfg.reset)
    resets_h, resets_c = ResetGrad(cfg.reset, steps), ResetGrad(cfg.reset, steps)
    edit_h, edit_c = edits  # EditGrad: an edited unit's gradient goes to its value
    for k, t in enumerate(order):
        dh, dc = edit_h(t, dh), edit_c(t, dc)
        dhn, hold_h = split_state_grad(dh, a_h, t)
        dcn, hold_c = split_state_grad(dc, a_c, t)
        if d_hnew is not None:
            d_hnew[t] = dhn
            dm = dhn @ p.w_hr  # (B, P) -> (B, H)
        else:
            dm = dhn
        if d_ctil is not None:  # dc += LN_c'(dm o (1 - tc^2))
            mean, rstd = ln_stats
            dct = torch.mul(dm, K[t], out=d_ctil[t])
            dcn = dcn + layer_norm_input_grad(dct, c_new[t], mean[t], rstd[t], p.ln_c_w, p.ln_c_b)
        if Kd is not None:
            dcn = torch.addcmul(dcn, dm, Kd[t])
        if Ec is not None:
            dcn = dcn + Ec[t]
        # dpre_t = A_t * [dc, .., dc, dm]: one contiguous write (strided out= would copy)
        dp = torch.mul(A[t], torch.stack((dcn,) * (G - 1) + (dm,), dim=1), out=dpre[t])
        if E is not None:
            dp += E[t]
        dc_prev = dcn * Fd[t]
        if Ef is not None:
            dc_prev += Ef[t]
        if hold_c is not None:
            dc_prev += hold_c
        nxt = order[k + 1] if k + 1 < T else None
        dH_next = dH[nxt] if (nxt is not None and dH is not None) else None
        dh = step_back(rec, resets_h, t, dp.view(B, G * H), hold_h, dH_next)
        dc_prev = resets_c(t, dc_prev)  # the cell that entered step t afresh: to c0
        dc = dc_prev if (nxt is None or dC is None) else dc_prev + dC[nxt]
    dh, dc = resets_h.initial(dh), resets_c.initial(dc)
    return dpre, dh, dc, d_hnew, d_ctil, tc, ln_stats


def lstm_backward(cfg, h0, c0, saved, d_states, d_act, needs) -> dict:
    """Gradients {xp, h0, c0, w_hh, b_hh, ln_hh, w_hr, w_peep, ln_c_w, ln_c_b, edit_h_value,
    edit_c_value} (None if unused or absent).

    saved: lstm_forward's (Hs, Cs, Cn, act, raw); d_states: (dH (T, B, H_out), dC (T, B, H) of
    the traced cells or None, d c_T (B, H) or None); d_act: (T, B, G*H) or None.
    """
    coupled, reverse = cfg.opts.coupled, cfg.reverse
    Hs, Cs, c_new, act, raw = saved  # c_new: the cell before zoneout / hold, what tanh saw
    T, B, H = Cs.shape
    dH, dC, d_last = d_states
    layout = lstm_layout(coupled)
    G = len(layout)
    rec = RecurrentProjectionGrad(cfg, Hs, h0, raw)
    first = visit_order(T, reverse)[0]
    dh = dH[first] if dH is not None else torch.zeros_like(Hs[0])
    dc = add_all(d_last, None if dC is None else dC[first])
    dc = torch.zeros_like(Cs[0]) if dc is None else dc
    edits = tuple(EditGrad(m, Cs) for m in cfg.edit_masks)  # (h, c)
    compiled = _compiled_loops(act, dh, dc)
    ln_stats = d_ctil = ln_c_sums = None
    if compiled is not None:
        dpre, dh, dc, d_hnew, tc, ln_c_sums = _compiled_chain(
            compiled, cfg, c0, saved, rec, edits, (dH, dC), d_act, dh, dc
        )
    else:
        dpre, dh, dc, d_hnew, d_ctil, tc, ln_stats = _python_chain(
            cfg, h0, c0, saved, rec, edits, (dH, dC), d_act, dh, dc
        )
    dxp = dpre.view(T, B, G * H)
    grads = {"xp": dxp, "h0": dh, "c0": dc}
    for name, edit in zip(("edit_h_value", "edit_c_value"), edits):
        if edit.value is not None:
            grads[name] = edit.value
    grads.update(rec.weight_grads(dxp, needs))
    if needs["w_hr"]:  # sum_t dh_new_t^T m_t as one matmul, m = o * tc
        m = tc.mul_(act[..., (G - 1) * H :])  # o is the last block
        grads["w_hr"] = d_hnew.reshape(-1, d_hnew.shape[-1]).t() @ m.reshape(-1, H)
    if needs["w_peep"]:
        sums = {"o": (dpre[:, :, G - 1] * c_new).sum((0, 1))}
        for name in ("i", "f"):
            if name in layout:
                d_gate = dpre[:, :, layout.index(name)]
                sums[name] = sum_with_previous(d_gate, Cs, c0, reverse, cfg.reset)
        grads["w_peep"] = torch.cat([sums[name] for name in peephole_layout(coupled)])
    if ln_c_sums is not None:  # summed inside the compiled loop
        grads["ln_c_w"], grads["ln_c_b"] = ln_c_sums[0], ln_c_sums[1]
    elif ln_stats is not None:
        mean, rstd = ln_stats
        if needs["ln_c_w"]:
            grads["ln_c_w"] = (c_new - mean).mul_(rstd).mul_(d_ctil).sum((0, 1))
        if needs["ln_c_b"]:
            grads["ln_c_b"] = d_ctil.sum((0, 1))
    return grads


def _compiled_chain(compiled, cfg, c0, saved, rec, edits, d_seq, d_act, dh, dc):
    """_python_chain's loop, compiled: dpre straight from the saved activations (no precomputed
    coefficients), the layer-norm gains' gradients summed inside the loop. Returns dpre
    (T, B, G, H), the gradients of h0 and c0, d_hnew and tc (projection) and the LN_c sums
    (2, H) or None; the LN_hh gain's gradient goes to rec.ln_hh_grad."""
    p, coupled = cfg.p, cfg.opts.coupled
    Hs, Cs, c_new, act, _ = saved
    T, B, H = Cs.shape
    dpre = torch.empty_like(act)
    hh = (None,) * 6
    if p.ln_hh is not None:  # rec holds raw, its statistics and the draw buffer
        rec.ln_hh_grad = torch.zeros_like(p.ln_hh)
        hh = (rec.ln_hh, rec.raw, rec.mean, rec.rstd, rec.draw, rec.ln_hh_grad)
    lnc, ln_c_sums, y_c = (None,) * 5, None, c_new  # y_c: LN_c(c_new), or c_new
    if p.ln_c_w is not None:  # one layer norm gives the statistics (T, B, 1) and y_c
        ln_c_sums = Cs.new_zeros(2, H)
        y_c, mean, rstd = torch.native_layer_norm(c_new, [H], p.ln_c_w, p.ln_c_b, LN_EPS)
        lnc = (p.ln_c_w, p.ln_c_b, mean, rstd, ln_c_sums)
    zo_h, zo_c, valid_rows = _zoneout_shares(cfg, T, B, H, Hs.shape[-1])
    zo = (zo_h, zo_c, c_new if cfg.keeps_new else None)
    d_hnew = tc = None
    if p.w_hr is not None:  # dW_hr = sum_t d h_new^T (o tanh(LN_c(c))) after the loop
        d_hnew = torch.empty_like(Hs)
        tc = torch.tanh(y_c)
    dH, dC = d_seq
    dh, dc = compiled.lstm_backward_loop(
        act, Cs, c0.contiguous(), _dense(p.w_peep), dH, dC, _dense(d_act), p.w_hh,
        cfg.masks.recurrent, valid_rows, _row_flags(cfg.reset), *_dense_all(hh),
        *_dense_all(lnc), *zo, _dense(p.w_hr), d_hnew, dh, dc, coupled, cfg.reverse, dpre,
        edits[0].mask, edits[1].mask, edits[0].value, edits[1].value,
    )  # fmt: skip
    return dpre.view(T, B, act.shape[-1] // H, H), dh, dc, d_hnew, tc, ln_c_sums
