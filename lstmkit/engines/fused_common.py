"""What the fused engine's loops share: the constant part of a direction (DirectionConfig), the
recurrent projection's gradient (per step and, for the weights, once after the loop), the
previous-state stacks and the zoneout / length split of a state's gradient.

Notation (per layer and direction, indexed by time t, visited in reverse processing order):
    h_in_t = h_{t-1} * rmask                        recurrent dropout mask, or no mask
    hp_t   = LN_hh(W_hh h_in_t) + b_hh              (B, G*H)
    state_t = a_t * new_t + (1 - a_t) * state_{t-1} zoneout and lengths (see keep_coefficient)
dhp_t is the gradient of the loss w.r.t. hp_t; the cell's backward computes it per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lstmkit.cells.base import LN_EPS, Cell, CellOptions, LayerParams
from lstmkit.cells.regularizers import StepMasks
from lstmkit.engines.resets import ResetGrad, entering_states
from lstmkit.intervene import StateEdits

_ln_backward = torch.ops.aten.native_layer_norm_backward


@dataclass
class DirectionConfig:
    """Everything a direction needs besides the differentiable tensors (constant in backward)."""

    cell: Cell
    opts: CellOptions
    p: LayerParams
    reverse: bool
    valid: Tensor | None  # (T, B, 1) bool
    masks: StepMasks
    rates: tuple[float, float]  # eval-mode zoneout (hidden, cell); 0 in training
    keep_hp: bool  # GRU: the backward needs W_hn h_{t-1} + b_hn
    reset: Tensor | None = None  # (T, B, 1) bool: the state entering step t is the initial one
    # interventions (lstmkit.intervene.StateEdits), per state (h, c): (T, B, *) bool masks and
    # the values they put in; the backward gets the masks only
    edit_masks: tuple[Tensor | None, ...] = (None, None)
    edit_values: tuple[Tensor | None, ...] = (None, None)

    @property
    def zoneout_on(self) -> bool:
        masks = (self.masks.zoneout_h, self.masks.zoneout_c)
        return any(m is not None for m in masks) or any(r > 0 for r in self.rates)

    @property
    def edited(self) -> bool:
        return any(m is not None for m in self.edit_masks)

    @property
    def keeps_new(self) -> bool:
        """Whether the cell's new values are kept apart from the states: zoneout mixes them with
        the previous states, an edit replaces some of them, and the backward needs the values
        the step itself computed (tanh(c_t), the RNN's 1 - h_t^2)."""
        return self.zoneout_on or self.edited

    def edit(self, which: int, t: int, state: Tensor) -> Tensor:
        """State `which` (0 = h, 1 = c) after step t, (B, *), with the edits due at t."""
        mask = self.edit_masks[which]
        return state if mask is None else StateEdits(mask, self.edit_values[which]).at(t, state)

    def keep_coefficient(self, which: int, dtype: torch.dtype) -> Tensor | None:
        """d state_t / d new_t for state `which` (0 = h, 1 = c): (T, B, *) or None for 1.

        state_t = where(valid, zoneout(prev, new), prev) = a * new + (1 - a) * prev with
        a = valid * (1 - zoneout mask) in training, valid * (1 - rate) in evaluation.
        """
        mask = (self.masks.zoneout_h, self.masks.zoneout_c)[which]
        rate = self.rates[which]
        a = None
        if mask is not None:
            a = 1.0 - mask
        elif rate > 0:
            a = torch.full((1, 1, 1), 1.0 - rate, dtype=dtype, device=self.p.w_hh.device)
        if self.valid is not None:
            v = self.valid.to(dtype)
            a = v if a is None else a * v
        return a


def mul_previous_(
    dst: Tensor, states: Tensor, s0: Tensor, reverse: bool, reset: Tensor | None = None
) -> Tensor:
    """dst (T, B, *) *= the state each step started from, in place (without resets, as slices:
    no shifted copy of the stack is made)."""
    if reset is not None:
        return dst.mul_(entering_states(states, s0, reverse, reset))
    if reverse:
        dst[:-1].mul_(states[1:])
        dst[-1].mul_(s0)
    else:
        dst[1:].mul_(states[:-1])
        dst[0].mul_(s0)
    return dst


def add_previous_(
    dst: Tensor, states: Tensor, s0: Tensor, reverse: bool, reset: Tensor | None = None
) -> Tensor:
    """dst (T, B, *) += the state each step started from, in place."""
    if reset is not None:
        return dst.add_(entering_states(states, s0, reverse, reset))
    if reverse:
        dst[:-1].add_(states[1:])
        dst[-1].add_(s0)
    else:
        dst[1:].add_(states[:-1])
        dst[0].add_(s0)
    return dst


def sum_with_previous(
    d: Tensor, states: Tensor, s0: Tensor, reverse: bool, reset: Tensor | None = None
) -> Tensor:
    """sum over t, b of d_t * (the state step t started from): (T, B, H) -> (H,)."""
    if reset is not None:
        return (d * entering_states(states, s0, reverse, reset)).sum((0, 1))
    if reverse:
        return (d[:-1] * states[1:]).sum((0, 1)) + (d[-1] * s0).sum(0)
    return (d[1:] * states[:-1]).sum((0, 1)) + (d[0] * s0).sum(0)


def matmul_with_previous(d: Tensor, states: Tensor, s0: Tensor, reverse: bool) -> Tensor:
    """sum over t of d_t^T state_{t-1}: d (T, B, N), states (T, B, M) -> (N, M), as two matmuls
    over the time-shifted slices (no shifted copy of the states is made)."""
    N, M = d.shape[-1], states.shape[-1]
    if reverse:
        inner, first = (d[:-1], states[1:]), (d[-1], s0)
    else:
        inner, first = (d[1:], states[:-1]), (d[0], s0)
    out = first[0].t() @ first[1]
    return out.addmm_(inner[0].reshape(-1, N).t(), inner[1].reshape(-1, M))


def visit_order(T: int, reverse: bool) -> list[int]:
    """Time indices in the order backward visits them (the forward's order, reversed)."""
    return list(range(T)) if reverse else list(range(T - 1, -1, -1))


def layer_norm_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and 1/std over the last dimension, as F.layer_norm computes them: (..., 1) each."""
    _, mean, rstd = torch.native_layer_norm(x, [x.shape[-1]], None, None, LN_EPS)
    return mean, rstd


def layer_norm_input_grad(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, w, b) -> Tensor:
    """d loss / d x of y = LN(x) * w + b, for one step (the gain's gradient is batched later)."""
    return _ln_backward(dy, x, [x.shape[-1]], mean, rstd, w, b, [True, False, False])[0]


def add_all(*terms: Tensor | None) -> Tensor | None:
    """Sum of the terms that are not None (None if all are)."""
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else total + term
    return total


class RecurrentProjectionGrad:
    """Backward of hp_t = LN_hh(W_hh (h_{t-1} * rmask)) + b_hh for all steps of one direction."""

    def __init__(self, cfg, Hs: Tensor, h0: Tensor, raw: Tensor | None = None) -> None:
        """raw (T, B, G*H): W_hh h_in from the forward when it kept it (LN_hh), else None."""
        p, masks = cfg.p, cfg.masks
        self.w_hh, self.ln_hh, self.rmask = p.w_hh, p.ln_hh, masks.recurrent
        self.Hs, self.h0, self.reverse = Hs, h0, cfg.reverse
        self.h_in = None  # (T, B, H_out), built only when the plain shifted states will not do
        if self.rmask is not None or self.ln_hh is not None or cfg.reset is not None:
            self.h_in = entering_states(Hs, h0, cfg.reverse, cfg.reset)
            if self.rmask is not None:
                self.h_in.mul_(self.rmask)
        self.ln_hh_grad = None  # the gain's gradient, where a compiled loop summed it
        if self.ln_hh is not None:
            # W_hh h_in for all steps, kept by the forward or else recomputed in one matmul
            self.raw = raw if raw is not None else self.h_in @ self.w_hh.t()  # (T, B, G*H)
            self.mean, self.rstd = layer_norm_stats(self.raw)
            self.draw = torch.empty_like(self.raw)  # d loss / d (W_hh h_in), per step

    def step(self, t: int, dhp: Tensor, add: Tensor | None) -> Tensor:
        """dhp (B, G*H) -> d loss / d h_{t-1} through the projection, plus `add` (B, H_out)."""
        if self.ln_hh is not None:
            dhp = layer_norm_input_grad(
                dhp, self.raw[t], self.mean[t], self.rstd[t], self.ln_hh, None
            )
            self.draw[t] = dhp
        if self.rmask is not None:
            dh = dhp @ self.w_hh
            return dh * self.rmask if add is None else torch.addcmul(add, dh, self.rmask)
        return dhp @ self.w_hh if add is None else torch.addmm(add, dhp, self.w_hh)

    def weight_grads(self, dhp: Tensor, needs: dict) -> dict[str, Tensor]:
        """dhp (T, B, G*H) for all steps -> gradients of W_hh, b_hh, ln_hh as single reductions."""
        GH = dhp.shape[-1]
        grads: dict[str, Tensor] = {}
        draw = dhp
        if self.ln_hh is not None:
            draw = self.draw
            if needs["ln_hh"] and self.ln_hh_grad is not None:
                grads["ln_hh"] = self.ln_hh_grad
            elif needs["ln_hh"]:
                xhat = (self.raw - self.mean).mul_(self.rstd)  # raw may be a saved tensor
                grads["ln_hh"] = xhat.mul_(dhp).sum((0, 1))
        if needs["w_hh"] and self.h_in is None:  # sum_t draw_t^T h_{t-1}: one big matmul
            grads["w_hh"] = matmul_with_previous(draw, self.Hs, self.h0, self.reverse)
        elif needs["w_hh"]:  # the same over the masked inputs, (G*H, T*B) x (T*B, H_out)
            grads["w_hh"] = draw.reshape(-1, GH).t() @ self.h_in.reshape(-1, self.h_in.shape[-1])
        if needs["b_hh"]:
            grads["b_hh"] = dhp.sum((0, 1))
        return grads


def step_back(
    rec: RecurrentProjectionGrad,
    resets: ResetGrad,
    t: int,
    dhp: Tensor,
    direct: Tensor | None,
    output_grad: Tensor | None,
) -> Tensor:
    """d loss / d h_{t-1} (B, H_out): through the recurrent projection of dhp (B, G*H), plus
    `direct` (what reaches h_{t-1} without the matmul: zoneout, held rows, the GRU's z path)
    and the output's own gradient at t - 1. At a reset the first two went to the initial
    state instead (ResetGrad); the output's gradient stays."""
    if t not in resets.steps:  # one addmm for all three
        return rec.step(t, dhp, add_all(output_grad, direct))
    return resets.carry(t, rec.step(t, dhp, direct), output_grad)


def split_state_grad(d: Tensor, a: Tensor | None, t: int) -> tuple[Tensor, Tensor | None]:
    """Gradient w.r.t. state_t -> (to the cell's new value, straight to state_{t-1} or None)."""
    if a is None:
        return d, None
    d_new = d * a[t] if a.shape[0] > 1 else d * a[0]
    return d_new, d - d_new


class EditGrad:
    """Backward of an edited state, state_t = where(mask_t, value_t, new_t), one step at a time:
    where the mask is set the gradient goes to the value and not to what the step computed.
    mask (T, B, *) bool or None (no edit: the gradient passes unchanged); `value` (T, B, *)
    collects the value's gradient (every step is visited once, so no zero fill)."""

    def __init__(self, mask: Tensor | None, like: Tensor) -> None:
        self.mask = mask
        self.value = None if mask is None else like.new_empty(mask.shape)

    def __call__(self, t: int, d: Tensor) -> Tensor:
        """d loss / d state_t (B, *) -> the part that reaches the step's own new value."""
        if self.mask is None:
            return d
        self.value[t] = torch.where(self.mask[t], d, 0.0)
        return d.masked_fill(self.mask[t], 0.0)
