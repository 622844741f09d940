"""Creating, naming and initialising the parameters of one layer-direction (or one cell).

Names follow torch.nn exactly, so state dicts load both ways: weight_ih_l{k}, weight_hh_l{k},
bias_ih_l{k}, bias_hh_l{k}, weight_hr_l{k} (suffix _reverse for the reverse direction; no _l{k}
suffix on the *Cell modules). The extras torch lacks add, only when switched on:

    weight_peep{sfx}   (len(peephole gates) * H)  peepholes for i, f, o (f, o when coupled)
    ln_weight_ih{sfx}  (G * H)  gain of the layer norm on W_ih x
    ln_weight_hh{sfx}  (G * H)  gain of the layer norm on W_hh h
    ln_weight_c{sfx}   (H)      gain of the layer norm on the LSTM cell before tanh
    ln_bias_c{sfx}     (H)      shift of the same
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lstmkit.cells.base import Cell, CellOptions, LayerParams
from lstmkit.cells.gates import peephole_layout

# LayerParams field -> parameter base name (torch's names first, in torch's order).
PARAM_NAMES = {
    "w_ih": "weight_ih",
    "w_hh": "weight_hh",
    "b_ih": "bias_ih",
    "b_hh": "bias_hh",
    "w_hr": "weight_hr",
    "w_peep": "weight_peep",
    "ln_ih": "ln_weight_ih",
    "ln_hh": "ln_weight_hh",
    "ln_c_w": "ln_weight_c",
    "ln_c_b": "ln_bias_c",
}
LAYER_NORM_FIELDS = ("ln_ih", "ln_hh", "ln_c_w", "ln_c_b")


@dataclass(frozen=True)
class ParamSpec:
    """What parameters one layer-direction has."""

    cell: Cell
    opts: CellOptions
    input_size: int
    hidden_size: int
    proj_size: int = 0
    bias: bool = True
    peephole: bool = False
    layer_norm: bool = False

    def shapes(self) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        GH = self.cell.num_blocks(self.opts) * H
        H_out = self.proj_size or H
        out: dict[str, tuple[int, ...]] = {"w_ih": (GH, self.input_size), "w_hh": (GH, H_out)}
        if self.bias:
            out["b_ih"] = out["b_hh"] = (GH,)
        if self.proj_size:
            out["w_hr"] = (self.proj_size, H)
        if self.peephole:
            out["w_peep"] = (len(peephole_layout(self.opts.coupled)) * H,)
        if self.layer_norm:
            out["ln_ih"] = out["ln_hh"] = (GH,)
            if "c" in self.cell.state_names:
                out["ln_c_w"] = out["ln_c_b"] = (H,)
        return out


def register_params(
    module: nn.Module, spec: ParamSpec, suffix: str, factory: dict
) -> dict[str, str]:
    """Create the parameters on `module`; return {LayerParams field: attribute name}."""
    names = {}
    for field, shape in spec.shapes().items():
        name = PARAM_NAMES[field] + suffix
        module.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
        names[field] = name
    return names


def gather(module: nn.Module, names: dict[str, str]) -> LayerParams:
    """Read the current parameters (getattr each call, so functional_call and reassignment work)."""
    return LayerParams(**{f: getattr(module, n) for f, n in names.items()})


@torch.no_grad()
def init_params(
    module: nn.Module, spec: ParamSpec, names: dict[str, str], forget_bias: float | None
) -> None:
    """torch's init, U(-1/sqrt(H), 1/sqrt(H)), for every weight and bias (peepholes too); layer
    norm gains 1 and shifts 0; then the forget gate's total bias set to `forget_bias` if given."""
    bound = 1.0 / math.sqrt(spec.hidden_size)
    for field, name in names.items():
        param = getattr(module, name)
        if field in LAYER_NORM_FIELDS:
            param.fill_(0.0 if field == "ln_c_b" else 1.0)
        else:
            nn.init.uniform_(param, -bound, bound)
    if forget_bias is not None:
        f = spec.cell.layout(spec.opts).index("f")
        H = spec.hidden_size
        getattr(module, names["b_ih"])[f * H : (f + 1) * H].fill_(float(forget_bias))
        getattr(module, names["b_hh"])[f * H : (f + 1) * H].fill_(0.0)
