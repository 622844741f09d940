"""The fused engine's layer-directions as PyTorch operators (see lstmkit.engines.ops for why).

    torch.ops.lstmkit.lstm_direction / lstm_direction_backward   (this module)
    torch.ops.lstmkit.gru_direction  / gru_direction_backward    (fused_ops_h.py)
    torch.ops.lstmkit.rnn_direction  / rnn_direction_backward    (fused_ops_h.py)

Each forward op runs one layer and direction over the whole sequence from its input projection
xp = LN_ih(W_ih x) + b_ih (computed outside, by ordinary autograd: one matmul each way), and
returns what the backward needs. Shapes: T steps, B batch, H hidden, P = H_out (proj_size or H),
G gate blocks; "(0,)" is the placeholder of an output that is absent (lstmkit.engines.ops).
Arguments that can be absent are `Tensor?`; `valid` (T, B, 1) bool marks the steps inside each
sequence; `zoneout_h` / `zoneout_c` are training zoneout masks (1 = keep the previous value),
`rate_h` / `rate_c` the evaluation-mode rates (0 in training); `rmask` is the recurrent
dropout mask on h_{t-1}. The implementations are lstmkit.engines.fused_lstm (compiled CPU loops
where available) and fused_gru: same math as the reference engine, to rounding.

Autocast: the recurrence runs in float32 (inputs are cast; the input projection keeps
autocast's dtype): a long recurrence is where bfloat16 rounding would accumulate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import CellOptions, LayerParams
from lstmkit.cells.gru import GRU_CELL
from lstmkit.cells.lstm import LSTM_CELL
from lstmkit.cells.regularizers import StepMasks
from lstmkit.engines.fused_common import DirectionConfig
from lstmkit.engines.fused_lstm import lstm_backward, lstm_forward
from lstmkit.engines.ops import (
    absent,
    loop_vmap,
    no_double_backward,
    present,
    schema_names,
    unaliased,
)

LSTM_WEIGHTS = ("w_hh", "w_hr", "w_peep", "ln_hh", "ln_c_w", "ln_c_b")
EDIT_VALUES = ("edit_h_value", "edit_c_value")  # the interventions' values, differentiable


def direction_config(
    cell, p: LayerParams, masks: StepMasks, valid, reset, rates, reverse, edits=None, **opts
):
    """The operators' arguments as a DirectionConfig. edits: (masks, values), each per state
    (h, c), or None."""
    edit_masks, edit_values = edits if edits is not None else ((None, None), (None, None))
    return DirectionConfig(
        cell=cell,
        opts=CellOptions(**opts),
        p=p,
        reverse=reverse,
        valid=valid,
        masks=masks,
        rates=rates,
        keep_hp=cell is GRU_CELL,
        reset=reset,
        edit_masks=edit_masks,
        edit_values=edit_values,
    )


def weight_grads_fake(given, needs, like: Tensor) -> list[Tensor]:
    return [torch.empty_like(w) if w is not None and n else like.new_empty(0)
            for w, n in zip(given, needs)]  # fmt: skip


def edit_value_grads_fake(edit_masks, like: Tensor) -> list[Tensor]:
    return [like.new_empty(0) if m is None else like.new_empty(m.shape) for m in edit_masks]


# ---- LSTM --------------------------------------------------------------------------------------
@torch.library.custom_op("lstmkit::lstm_direction", mutates_args=())
def lstm_direction(
    xp: Tensor,  # (T, B, G*H) LN_ih(W_ih x) + b_ih + b_hh
    h0: Tensor,  # (B, P)
    c0: Tensor,  # (B, H)
    w_hh: Tensor,  # (G*H, P)
    w_hr: Tensor | None,  # (P, H) projection
    w_peep: Tensor | None,  # ((G-1)*H) peepholes, stacked i, f, o (f, o when coupled)
    ln_hh: Tensor | None,  # (G*H) gain of LN_hh
    ln_c_w: Tensor | None,  # (H) gain of LN_c
    ln_c_b: Tensor | None,  # (H) shift of LN_c
    rmask: Tensor | None,  # (B, P)
    valid: Tensor | None,  # (T, B, 1) bool
    reset: Tensor | None,  # (T, B, 1) bool: the state entering step t is (h0, c0)
    zoneout_h: Tensor | None,  # (T, B, P)
    zoneout_c: Tensor | None,  # (T, B, H)
    rate_h: float,
    rate_c: float,
    coupled: bool,
    reverse: bool,
    edit_h: Tensor | None = None,  # (T, B, P) bool: h after step t is replaced (interventions)
    edit_h_value: Tensor | None = None,  # (T, B, P) by these values
    edit_c: Tensor | None = None,  # (T, B, H) bool, the same for c
    edit_c_value: Tensor | None = None,  # (T, B, H)
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> Hs (T, B, P) and Cs (T, B, H), the states after each step; c_last (B, H), the final
    cell; A (T, B, G*H), the gate activations in layout order; Cn (T, B, H), the cell the steps
    computed (before zoneout and edits), or (0,) without either; raw (T, B, G*H) = W_hh h_in
    before LN_hh, or (0,)."""
    p = LayerParams(None, w_hh, w_hr=w_hr, w_peep=w_peep, ln_hh=ln_hh, ln_c_w=ln_c_w, ln_c_b=ln_c_b)
    masks = StepMasks(rmask, zoneout_h, zoneout_c)
    edits = ((edit_h, edit_c), (edit_h_value, edit_c_value))
    cfg = direction_config(
        LSTM_CELL, p, masks, valid, reset, (rate_h, rate_c), reverse, edits, coupled=coupled
    )
    Hs, Cs, Cn, A, raw = lstm_forward(cfg, xp, h0, c0)
    last = Cs[0 if reverse else -1].clone()
    Cn = Cn if cfg.keeps_new else None  # else Cs serves (held rows get no gradient)
    return Hs, Cs, last, A, present(Cn, xp), present(raw, xp)


@lstm_direction.register_fake
def _(xp, h0, c0, w_hh, w_hr, w_peep, ln_hh, ln_c_w, ln_c_b, rmask, valid, reset, zoneout_h,
      zoneout_c, rate_h, rate_c, coupled, reverse, edit_h=None, edit_h_value=None, edit_c=None,
      edit_c_value=None):  # fmt: skip
    T, B, _ = xp.shape
    H, P = c0.shape[-1], h0.shape[-1]
    zoneout_on = zoneout_h is not None or zoneout_c is not None or rate_h > 0 or rate_c > 0
    keeps_new = zoneout_on or edit_h is not None or edit_c is not None
    Cn = xp.new_empty(T, B, H) if keeps_new else xp.new_empty(0)
    raw = torch.empty_like(xp) if ln_hh is not None else xp.new_empty(0)
    return (
        xp.new_empty(T, B, P),
        xp.new_empty(T, B, H),
        c0.new_empty(B, H),
        torch.empty_like(xp),
        Cn,
        raw,
    )


@torch.library.custom_op("lstmkit::lstm_direction_backward", mutates_args=())
def lstm_direction_backward(
    dHs: Tensor | None,  # (T, B, P) gradients of lstm_direction's outputs, None where unused
    dCs: Tensor | None,  # (T, B, H)
    dc_last: Tensor | None,  # (B, H)
    dA: Tensor | None,  # (T, B, G*H)
    h0: Tensor,
    c0: Tensor,
    Hs: Tensor,  # lstm_direction's outputs
    Cs: Tensor,
    A: Tensor,
    Cn: Tensor,
    raw: Tensor,
    w_hh: Tensor,  # and its inputs, as there
    w_hr: Tensor | None,
    w_peep: Tensor | None,
    ln_hh: Tensor | None,
    ln_c_w: Tensor | None,
    ln_c_b: Tensor | None,
    rmask: Tensor | None,
    valid: Tensor | None,
    reset: Tensor | None,
    zoneout_h: Tensor | None,
    zoneout_c: Tensor | None,
    rate_h: float,
    rate_c: float,
    coupled: bool,
    reverse: bool,
    needs: list[bool],  # which of LSTM_WEIGHTS need a gradient
    edit_h: Tensor | None = None,  # lstm_direction's edit masks
    edit_c: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> d xp, d h0, d c0, then d of each of LSTM_WEIGHTS ((0,) where absent or not needed),
    then d edit_h_value and d edit_c_value ((0,) without that edit)."""
    p = LayerParams(None, w_hh, w_hr=w_hr, w_peep=w_peep, ln_hh=ln_hh, ln_c_w=ln_c_w, ln_c_b=ln_c_b)
    masks = StepMasks(rmask, zoneout_h, zoneout_c)
    edits = ((edit_h, edit_c), (None, None))  # the backward needs the masks only
    cfg = direction_config(
        LSTM_CELL, p, masks, valid, reset, (rate_h, rate_c), reverse, edits, coupled=coupled
    )
    want = dict(zip(LSTM_WEIGHTS, needs), b_hh=False)
    saved = (Hs, Cs, absent(Cn) if absent(Cn) is not None else Cs, A, absent(raw))
    g = lstm_backward(cfg, h0, c0, saved, (dHs, dCs, dc_last), dA, want)
    weights = [present(g.get(k) if want[k] else None, w_hh) for k in LSTM_WEIGHTS]
    values = [present(g.get(k), w_hh) for k in EDIT_VALUES]
    inputs = (dHs, dCs, dc_last, dA, h0, c0, Hs, Cs, A, Cn, raw, w_hh, w_hr, w_peep, ln_hh)
    return unaliased((g["xp"], g["h0"], g["c0"], *weights, *values), inputs)


@lstm_direction_backward.register_fake
def _(dHs, dCs, dc_last, dA, h0, c0, Hs, Cs, A, Cn, raw, w_hh, w_hr, w_peep, ln_hh, ln_c_w,
      ln_c_b, rmask, valid, reset, zoneout_h, zoneout_c, rate_h, rate_c, coupled, reverse,
      needs, edit_h=None, edit_c=None):  # fmt: skip
    weights = weight_grads_fake((w_hh, w_hr, w_peep, ln_hh, ln_c_w, ln_c_b), needs, w_hh)
    values = edit_value_grads_fake((edit_h, edit_c), Hs)
    return torch.empty_like(A), torch.empty_like(h0), torch.empty_like(c0), *weights, *values


LSTM_INPUTS = schema_names(lstm_direction)


class LSTMDirection(torch.autograd.Function):
    """Differentiable lstmkit::lstm_direction (inputs in LSTM_INPUTS order)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args):
        return torch.ops.lstmkit.lstm_direction(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # unused outputs (no trace) arrive as None
        Hs, Cs, _, A, Cn, raw = output
        ctx.mark_non_differentiable(Cn, raw)
        a = dict(zip(LSTM_INPUTS, inputs))
        ctx.weights_given = [a[k] is not None for k in LSTM_WEIGHTS]
        ctx.flags = (a["rate_h"], a["rate_c"], a["coupled"], a["reverse"])
        tensors = ("h0", "c0", *LSTM_WEIGHTS, "rmask", "valid", "reset", "zoneout_h", "zoneout_c")
        edits = ("edit_h", "edit_c")
        ctx.save_for_backward(Hs, Cs, A, Cn, raw, *(a[k] for k in tensors + edits))

    @staticmethod
    def backward(ctx, dHs, dCs, dc_last, dA, _dCn, _draw):
        Hs, Cs, A, Cn, raw, h0, c0, *rest = ctx.saved_tensors
        weights, masks, edits = rest[:6], rest[6:11], rest[11:]
        need = ctx.needs_input_grad
        needs = [need[LSTM_INPUTS.index(k)] and g for k, g in zip(LSTM_WEIGHTS, ctx.weights_given)]
        with torch.no_grad():
            g = torch.ops.lstmkit.lstm_direction_backward(
                dHs, dCs, dc_last, dA, h0, c0, Hs, Cs, A, Cn, raw, *weights, *masks,
                *ctx.flags, needs, *edits,
            )  # fmt: skip
        grads = dict(zip(("xp", "h0", "c0"), g[:3]))
        grads.update({k: v for k, v, n in zip(LSTM_WEIGHTS, g[3:9], needs) if n})
        grads.update({k: absent(v) for k, v in zip(EDIT_VALUES, g[9:])})
        out = no_double_backward("fused", Hs, [grads.get(k) for k in LSTM_INPUTS])
        return out


lstm_direction.register_autograd(LSTMDirection.backward, setup_context=LSTMDirection.setup_context)


for _op in (lstm_direction, lstm_direction_backward):
    _op.register_vmap(loop_vmap(_op))
for _device in ("cpu", "cuda"):
    torch.library.register_autocast(lstm_direction, _device, torch.float32)
