"""Type checks for config dataclasses whose values come from TOML, JSON or the command line.

A dataclass does not check its annotations, so `dry_run = "no"` in a TOML file would be a truthy
string and `epochs = 2.5` a float that breaks a range() later. check_types() reads each field's
annotation (bool, int, float, str, dict, and `X | None` of those) and refuses a value of another
kind with a sentence naming the key, the expected kind and the value. Floats must be finite:
no setting of lstmkit means anything at NaN or infinity (`lr = inf` is not "very fast").
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

# what a user reads in the message, in TOML's words (true/false, integer, number, string, table)
_KIND = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
_KIND[dict] = "a table of settings"


def _accepts(kind: type, value: object) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # True is an int to Python, never a count or a rate to a user
    if kind is int:
        return isinstance(value, int)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def _kinds(annotation: object) -> tuple[tuple[type, ...], bool]:
    """(allowed types, None allowed) of a field annotation such as `int | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = typing.get_args(annotation)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (typing.get_origin(annotation) or annotation,), False


def check_types(obj: object) -> None:
    """Raise ValueError when a field of dataclass `obj` holds a value its annotation excludes.
    (Callers that know where the values came from prefix the file or "flags" to the message.)"""
    check_values(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})


def check_values(cls: type, values: dict) -> None:
    """check_types for a mapping of some of dataclass `cls`'s fields (unknown keys are left to
    the caller): e.g. a config file's values before command-line flags replace some of them, so
    a wrong `bptt = "10"` in the file is reported even when --bptt is given too."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name not in hints:
            continue
        allowed, optional = _kinds(hints[name])
        if value is None and optional:
            continue
        if any(_accepts(kind, value) for kind in allowed):
            continue
        expected = " or ".join(_KIND.get(k, k.__name__) for k in allowed)
        if optional:
            expected += " (or left out)"
        shown = "null" if value is None else repr(value)
        if isinstance(value, float) and float in allowed:  # the right kind, but nan or inf
            raise ValueError(f"{name} must be a finite number, got {shown}")
        raise ValueError(
            f"{name} must be {expected}, got {shown} ({type(value).__name__}); "
            f"write it as {_example(allowed[0])}"
        )


def _example(kind: type) -> str:
    return {
        bool: "true or false (TOML/JSON) or by giving the flag",
        int: "a whole number without quotes, e.g. 10",
        float: "a number without quotes, e.g. 0.25",
        str: 'a quoted string, e.g. "data/train.txt"',
        dict: "a [model] table",
    }.get(kind, kind.__name__)
