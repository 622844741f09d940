"""Checking constructor arguments: every argument of the layers and cells is checked here, once.

Each check returns the value to keep or raises a TypeError (wrong kind of value) or a ValueError
(right kind, wrong value) whose message names the argument, says what was expected and what was
given. Where torch.nn has words for the same fault they come first, so that a message matched
against torch's still matches. NaN and infinities are refused wherever a float goes: NaN passes
no comparison, so a bound written `not 0 <= x <= 1` refuses it, but a free number (forget_bias)
needs its own `math.isfinite`, or every output of the layer silently becomes NaN.
"""

from __future__ import annotations

import math
import numbers

from lstmkit import engines
from lstmkit.cells.base import Cell, CellOptions
from lstmkit.cells.regularizers import ZoneoutRates


def _kind(value: object) -> str:
    return type(value).__name__


def _is_real(value: object) -> bool:
    # numbers.Real, not Number: a complex passes Number, then fails `0 <= z` with a TypeError
    # that names no argument. bool is an int to Python but never a size or a rate here.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_size(name: str, value: object, minimum: int = 1) -> int:
    """An int >= minimum (input_size, hidden_size, num_layers: 1; proj_size: 0)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"{name} should be of type int, got: {_kind(value)} ({value!r}); pass a whole number"
        )
    if value < minimum:
        if minimum == 0:  # proj_size, in torch's words
            raise ValueError(
                f"{name} should be a positive integer or zero to disable projections, got {value}"
            )
        raise ValueError(f"{name} must be greater than zero, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"{name} should be of type bool, got: {_kind(value)} ({value!r}); "
            f"pass {name}=True or {name}=False"
        )
    return value


def check_dropout(value: object) -> float:
    """torch.nn's dropout between layers: a probability in [0, 1], in torch's words."""
    if not _is_real(value) or not 0 <= value <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {value!r}"
        )
    return float(value)


def check_rate(name: str, value: object, upper_inclusive: bool = True) -> float:
    """A probability: recurrent_dropout, weight_drop ([0, 1): 1 would divide by zero), zoneout."""
    ok = _is_real(value) and 0 <= value <= 1 and (upper_inclusive or value < 1)
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(
            f"{name} should be a number in range {bound}, got {value!r}; "
            f"pass a probability, e.g. {name}=0.1 (0 switches it off)"
        )
    return float(value)


def zoneout_pair(zoneout: object, cell: Cell) -> ZoneoutRates:
    """A rate or a (cell, hidden) pair -> checked rates (cell 0 without a c)."""
    if isinstance(zoneout, (tuple, list)):
        if len(zoneout) != 2:
            raise ValueError(
                f"zoneout should be a rate or a (cell, hidden) pair, got {zoneout!r}; "
                "pass e.g. zoneout=0.1 or zoneout=(0.15, 0.05)"
            )
        zoneout_c, zoneout_h = (check_rate("zoneout", z) for z in zoneout)
    else:
        zoneout_c = zoneout_h = check_rate("zoneout", zoneout)
    return ZoneoutRates(cell=zoneout_c if "c" in cell.state_names else 0.0, hidden=zoneout_h)


def check_forget_bias(value: object, cell: Cell, coupled: bool, bias: bool) -> float | None:
    """None (torch's init) or a finite number, for a cell with a forget gate and biases.
    Unbounded, so NaN and inf need their own test."""
    if value is None:
        return None
    if not _is_real(value):
        raise TypeError(
            f"forget_bias must be a number or None, got: {_kind(value)} ({value!r}); "
            "pass the initial forget-gate bias, e.g. forget_bias=1.0, or None for torch's init"
        )
    if not math.isfinite(value):
        raise ValueError(
            f"forget_bias must be a finite number, got {value!r}; every output would be NaN. "
            "Pass the initial forget-gate bias, e.g. forget_bias=1.0, or None for torch's init"
        )
    if "f" not in cell.layout(CellOptions(coupled=coupled)):
        raise ValueError(f"forget_bias: the {cell.name} cell has no forget gate 'f'")
    if not bias:
        raise ValueError("forget_bias needs bias=True: the forget gate's bias is where it goes")
    return float(value)


def check_nonlinearity(value: object) -> str:
    if not isinstance(value, str) or value not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity {value!r}. Select from 'tanh' or 'relu'.")
    return value


def check_engine(value: object) -> str:
    if not isinstance(value, str):  # a list would reach a dict lookup: "unhashable type"
        raise TypeError(
            f"engine should be a str, got: {_kind(value)} ({value!r}); "
            f"pass 'auto' or one of {sorted(engines.ENGINES)}"
        )
    engines.check_engine_name(value)
    return value


def check_cell_options(
    cell: Cell,
    *,
    bias: object,
    nonlinearity: object,
    forget_bias: object,
    peephole: object,
    coupled: object,
    layer_norm: object,
) -> float | None:
    """The options a layer and a one-step cell share; returns the checked forget_bias."""
    for flag_name, flag in (
        ("bias", bias),
        ("peephole", peephole),
        ("coupled", coupled),
        ("layer_norm", layer_norm),
    ):
        check_bool(flag_name, flag)
    check_nonlinearity(nonlinearity)
    for flag_name, flag, ok in (
        ("peephole", peephole, cell.supports_peephole),
        ("coupled", coupled, cell.supports_coupled),
    ):
        if flag and not ok:
            raise ValueError(f"{flag_name}=True: the {cell.name} cell has no such option")
    return check_forget_bias(forget_bias, cell, bool(coupled), bool(bias))
