"""The fused engine's GRU and RNN layer-directions as PyTorch operators (one state, h): the
same pattern and argument conventions as the LSTM's in lstmkit.engines.fused_ops, which
documents them. The implementations are lstmkit.engines.fused_gru."""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import LayerParams
from lstmkit.cells.gru import GRU_CELL
from lstmkit.cells.regularizers import StepMasks
from lstmkit.cells.rnn import RNN_CELL
from lstmkit.engines.fused_gru import forward_loop, gru_backward, rnn_backward
from lstmkit.engines.fused_ops import (
    direction_config,
    edit_value_grads_fake,
    weight_grads_fake,
)
from lstmkit.engines.ops import (
    absent,
    loop_vmap,
    no_double_backward,
    present,
    schema_names,
    unaliased,
)

H_WEIGHTS = ("w_hh", "b_hh", "ln_hh")  # the weights the operator differentiates


def _h_forward(cell, xp, h0, w_hh, b_hh, ln_hh, rmask, valid, reset, zoneout_h, rate_h, reverse,
               relu, edit_h, edit_h_value):  # fmt: skip
    p = LayerParams(None, w_hh, b_hh=b_hh, ln_hh=ln_hh)
    masks = StepMasks(rmask, zoneout_h)
    nonlinearity = "relu" if relu else "tanh"
    edits = ((edit_h,), (edit_h_value,))
    cfg = direction_config(
        cell, p, masks, valid, reset, (rate_h, 0.0), reverse, edits, nonlinearity=nonlinearity
    )
    (Hs,), (Hn,), gates, hp = forward_loop(cfg, xp, (h0,))
    Hn = Hn if cfg.keeps_new else None  # else Hs serves
    gates = torch.stack(list(gates.values())) if gates else None  # (3, T, B, H) r, z, n
    return Hs, present(Hn, xp), present(gates, xp), present(hp, xp)


def _h_backward(cell, dHs, dG, h0, Hs, Hn, G, hp, w_hh, b_hh, ln_hh, rmask, valid, reset,
                zoneout_h, rate_h, reverse, relu, needs, edit_h):  # fmt: skip
    p = LayerParams(None, w_hh, b_hh=b_hh, ln_hh=ln_hh)
    nonlinearity = "relu" if relu else "tanh"
    masks = StepMasks(rmask, zoneout_h)
    edits = ((edit_h,), (None,))  # the backward needs the mask only
    cfg = direction_config(
        cell, p, masks, valid, reset, (rate_h, 0.0), reverse, edits, nonlinearity=nonlinearity
    )
    want = dict(zip(H_WEIGHTS, needs))
    Hn = absent(Hn) if absent(Hn) is not None else Hs
    if cell is GRU_CELL:
        gates = dict(zip(("r", "z", "n"), G))
        d_gates = dict(zip(("r", "z", "n"), dG)) if dG is not None else {}
        g = gru_backward(cfg, h0, Hs, Hn, gates, hp, dHs, d_gates, want)
    else:
        g = rnn_backward(cfg, h0, Hs, Hn, dHs, want)
    weights = [present(g.get(k) if want[k] else None, w_hh) for k in H_WEIGHTS]
    value = present(g.get("edit_h_value"), w_hh)
    inputs = (dHs, dG, h0, Hs, Hn, G, hp, w_hh, b_hh)
    return unaliased((g["xp"], g["h0"], *weights, value), inputs)


@torch.library.custom_op("lstmkit::gru_direction", mutates_args=())
def gru_direction(
    xp: Tensor,  # (T, B, 3H) LN_ih(W_ih x) + b_ih
    h0: Tensor,  # (B, H)
    w_hh: Tensor,  # (3H, H)
    b_hh: Tensor | None,  # (3H)
    ln_hh: Tensor | None,  # (3H)
    rmask: Tensor | None,  # (B, H)
    valid: Tensor | None,  # (T, B, 1) bool
    reset: Tensor | None,  # (T, B, 1) bool: the state entering step t is h0
    zoneout_h: Tensor | None,  # (T, B, H)
    rate_h: float,
    reverse: bool,
    edit_h: Tensor | None = None,  # (T, B, H) bool: h after step t is replaced (interventions)
    edit_h_value: Tensor | None = None,  # (T, B, H) by these values
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> Hs (T, B, H); Hn (T, B, H) before zoneout and edits, or (0,) without either; gates
    (3, T, B, H) r, z, n; hp (T, B, 3H) = LN_hh(W_hh h_in) + b_hh."""
    return _h_forward(GRU_CELL, xp, h0, w_hh, b_hh, ln_hh, rmask, valid, reset, zoneout_h, rate_h,
                      reverse, False, edit_h, edit_h_value)  # fmt: skip


@torch.library.custom_op("lstmkit::rnn_direction", mutates_args=())
def rnn_direction(
    xp: Tensor,  # (T, B, H) W_ih x + b_ih (+ b_hh when there is no LN_hh)
    h0: Tensor,  # (B, H)
    w_hh: Tensor,  # (H, H)
    b_hh: Tensor | None,  # (H), only with LN_hh
    ln_hh: Tensor | None,  # (H)
    rmask: Tensor | None,  # (B, H)
    valid: Tensor | None,  # (T, B, 1) bool
    reset: Tensor | None,  # (T, B, 1) bool: the state entering step t is h0
    zoneout_h: Tensor | None,  # (T, B, H)
    rate_h: float,
    reverse: bool,
    relu: bool,
    edit_h: Tensor | None = None,  # as gru_direction's
    edit_h_value: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> Hs (T, B, H); Hn (T, B, H) before zoneout and edits, or (0,) without either; (0,);
    (0,) (the GRU's gates and projections: an RNN has none)."""
    return _h_forward(RNN_CELL, xp, h0, w_hh, b_hh, ln_hh, rmask, valid, reset, zoneout_h, rate_h,
                      reverse, relu, edit_h, edit_h_value)  # fmt: skip


def _h_fake(xp, h0, zoneout_h, rate_h, edit_h, gru: bool):
    T, B, _ = xp.shape
    H = h0.shape[-1]
    keeps_new = zoneout_h is not None or rate_h > 0 or edit_h is not None
    Hn = xp.new_empty(T, B, H) if keeps_new else xp.new_empty(0)
    G = xp.new_empty(3, T, B, H) if gru else xp.new_empty(0)
    hp = torch.empty_like(xp) if gru else xp.new_empty(0)
    return xp.new_empty(T, B, H), Hn, G, hp


@gru_direction.register_fake
def _(xp, h0, w_hh, b_hh, ln_hh, rmask, valid, reset, zoneout_h, rate_h, reverse, edit_h=None,
      edit_h_value=None):  # fmt: skip
    return _h_fake(xp, h0, zoneout_h, rate_h, edit_h, gru=True)


@rnn_direction.register_fake
def _(xp, h0, w_hh, b_hh, ln_hh, rmask, valid, reset, zoneout_h, rate_h, reverse, relu,
      edit_h=None, edit_h_value=None):  # fmt: skip
    return _h_fake(xp, h0, zoneout_h, rate_h, edit_h, gru=False)


@torch.library.custom_op("lstmkit::gru_direction_backward", mutates_args=())
def gru_direction_backward(
    dHs: Tensor | None,  # (T, B, H)
    dG: Tensor | None,  # (3, T, B, H) gradients of the traced gates
    h0: Tensor,
    Hs: Tensor,  # gru_direction's outputs
    Hn: Tensor,
    G: Tensor,
    hp: Tensor,
    w_hh: Tensor,  # and its inputs, as there
    b_hh: Tensor | None,
    ln_hh: Tensor | None,
    rmask: Tensor | None,
    valid: Tensor | None,
    reset: Tensor | None,
    zoneout_h: Tensor | None,
    rate_h: float,
    reverse: bool,
    needs: list[bool],  # which of H_WEIGHTS need a gradient
    edit_h: Tensor | None = None,  # gru_direction's edit mask
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> d xp, d h0, then d of each of H_WEIGHTS ((0,) where absent or not needed), then
    d edit_h_value ((0,) without an edit)."""
    return _h_backward(GRU_CELL, dHs, dG, h0, Hs, Hn, G, hp, w_hh, b_hh, ln_hh, rmask, valid,
                       reset, zoneout_h, rate_h, reverse, False, needs, edit_h)  # fmt: skip


@torch.library.custom_op("lstmkit::rnn_direction_backward", mutates_args=())
def rnn_direction_backward(
    dHs: Tensor | None,
    h0: Tensor,
    Hs: Tensor,
    Hn: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    ln_hh: Tensor | None,
    rmask: Tensor | None,
    valid: Tensor | None,
    reset: Tensor | None,
    zoneout_h: Tensor | None,
    rate_h: float,
    reverse: bool,
    relu: bool,
    needs: list[bool],
    edit_h: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> d xp, d h0, then d of each of H_WEIGHTS ((0,) where absent or not needed), then
    d edit_h_value ((0,) without an edit)."""
    return _h_backward(RNN_CELL, dHs, None, h0, Hs, Hn, None, None, w_hh, b_hh, ln_hh, rmask, valid,
                       reset, zoneout_h, rate_h, reverse, relu, needs, edit_h)  # fmt: skip


@gru_direction_backward.register_fake
def _(dHs, dG, h0, Hs, Hn, G, hp, w_hh, b_hh, ln_hh, rmask, valid, reset, zoneout_h, rate_h,
      reverse, needs, edit_h=None):  # fmt: skip
    weights = weight_grads_fake((w_hh, b_hh, ln_hh), needs, w_hh)
    value = edit_value_grads_fake((edit_h,), Hs)
    return torch.empty_like(hp), torch.empty_like(h0), *weights, *value


@rnn_direction_backward.register_fake
def _(dHs, h0, Hs, Hn, w_hh, b_hh, ln_hh, rmask, valid, reset, zoneout_h, rate_h, reverse, relu,
      needs, edit_h=None):  # fmt: skip
    weights = weight_grads_fake((w_hh, b_hh, ln_hh), needs, w_hh)
    value = edit_value_grads_fake((edit_h,), Hs)
    return torch.empty_like(Hs), torch.empty_like(h0), *weights, *value


GRU_INPUTS = schema_names(gru_direction)
RNN_INPUTS = schema_names(rnn_direction)


class HDirection(torch.autograd.Function):
    """Differentiable lstmkit::gru_direction / rnn_direction: forward(op_name, *inputs)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(cell_name, *args):
        op = (
            torch.ops.lstmkit.gru_direction
            if cell_name == "GRU"
            else torch.ops.lstmkit.rnn_direction
        )
        return op(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        cell_name, *args = inputs
        names = GRU_INPUTS if cell_name == "GRU" else RNN_INPUTS
        a = dict(zip(names, args))
        Hs, Hn, G, hp = output
        ctx.mark_non_differentiable(Hn, hp)
        ctx.cell_name, ctx.names = cell_name, names
        ctx.given = [a[k] is not None for k in H_WEIGHTS]
        ctx.flags = (a["rate_h"], a["reverse"]) + ((a["relu"],) if cell_name == "RNN" else ())
        tensors = ("h0", *H_WEIGHTS, "rmask", "valid", "reset", "zoneout_h", "edit_h")
        ctx.save_for_backward(Hs, Hn, G, hp, *(a[k] for k in tensors))

    @staticmethod
    def backward(ctx, dHs, _dHn, dG, _dhp):
        Hs, Hn, G, hp, h0, *rest, edit_h = ctx.saved_tensors
        need = ctx.needs_input_grad[1:]
        needs = [need[ctx.names.index(k)] and g for k, g in zip(H_WEIGHTS, ctx.given)]
        with torch.no_grad():
            if ctx.cell_name == "GRU":
                g = torch.ops.lstmkit.gru_direction_backward(
                    dHs, dG, h0, Hs, Hn, G, hp, *rest, *ctx.flags, needs, edit_h
                )
            else:
                g = torch.ops.lstmkit.rnn_direction_backward(
                    dHs, h0, Hs, Hn, *rest, *ctx.flags, needs, edit_h
                )
        grads = {"xp": g[0], "h0": g[1], "edit_h_value": absent(g[5])}
        grads.update({k: v for k, v, n in zip(H_WEIGHTS, g[2:5], needs) if n})
        return (None, *no_double_backward("fused", Hs, [grads.get(k) for k in ctx.names]))


def _h_registration(cell_name: str):
    """HDirection's autograd for the op itself (whose inputs lack the leading cell name)."""

    def setup(ctx, inputs, output):
        HDirection.setup_context(ctx, (cell_name, *inputs), output)

    def backward(ctx, *grads):
        return HDirection.backward(ctx, *grads)[1:]

    return backward, setup


for _op, _name in ((gru_direction, "GRU"), (rnn_direction, "RNN")):
    _backward, _setup = _h_registration(_name)
    _op.register_autograd(_backward, setup_context=_setup)

for _op in (gru_direction, gru_direction_backward, rnn_direction, rnn_direction_backward):
    _op.register_vmap(loop_vmap(_op))
for _op in (gru_direction, rnn_direction):
    for _device in ("cpu", "cuda"):
        torch.library.register_autocast(_op, _device, torch.float32)
