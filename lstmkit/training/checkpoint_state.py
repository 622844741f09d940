"""The training state of a resumable checkpoint: optimizer and RNG states, without pickle.

    state.safetensors  optim.{pid}.{key} (optimizer tensors), rng.torch / rng.cuda.{i},
                       tensor.{name} (the caller's, e.g. the carried hidden state)
    state.json         {"state": the caller's JSON, "optimizer": {class, param_groups, scalars,
                       tensor_pids}, "rng": {python, numpy}}

Everything is checked before anything is restored, so a refused checkpoint leaves the optimizer
and the RNGs as they were: the optimizer's class and settings, a complete state for every
parameter that has one (Adam/AdamW: exp_avg, exp_avg_sq, step; SGD with momentum:
momentum_buffer) of the parameter's shape and dtype and finite, and RNG states that the
generators accept. A missing Adam tensor would otherwise restart the optimizer silently.
"""

from __future__ import annotations

import inspect
import itertools
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lstmkit.training.checkpoint_verify import (
    USE_ANOTHER,
    CheckpointError,
    cap,
    is_finite_number,
    json_kind,
    listing,
    need,
    short,
)

SAME_OPTIMIZER = "resume with the same --optimizer (and model) as the saved run"


# ---- saving ----------------------------------------------------------------------------------
def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's state_dict as (tensors, JSON-able rest), so that no pickle is needed."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {
        "class": type(optimizer).__name__,
        "param_groups": sd["param_groups"],
        "scalars": scalars,
        "tensor_pids": sorted({int(k.split(".")[1]) for k in tensors}),
    }


def optimizer_from_flat(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    groups = [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
        for g in meta["param_groups"]
    ]  # JSON turned tuples to lists
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, Tensor], dict]:
    """Every RNG a training step may touch: torch (CPU and CUDA), Python, NumPy."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {
        "python": [version, list(mt), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


# ---- checking, then restoring ----------------------------------------------------------------
def check_state_json(f, meta: Any) -> dict:
    """state.json's outline: {"state": object, "optimizer"?: object, "rng"?: object}."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{f} must hold a JSON object; it holds {json_kind(meta)}")
    need(f, meta, "state", dict, "an object: the training state (step, data position, ...)")
    if "optimizer" in meta:
        opt = need(f, meta, "optimizer", dict, "an object of optimizer settings")
        groups = need(f, opt, "param_groups", list, "a list of parameter groups", "optimizer")
        for i, g in enumerate(groups):
            if not isinstance(g, dict):
                raise CheckpointError(f"{f}: optimizer.param_groups[{i}] must be an object")
            params = need(f, g, "params", list, "a list of parameter ids", f"param_groups[{i}]")
            if not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
                raise CheckpointError(f"{f}: param_groups[{i}].params must be integers")
        scalars = need(f, opt, "scalars", dict, "an object {parameter id: {...}}", "optimizer")
        for pid in scalars:
            need(f, scalars, pid, dict, "an object of settings", "optimizer.scalars")
        pids = need(f, opt, "tensor_pids", list, "a list of parameter ids", "optimizer")
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in pids):
            raise CheckpointError(f"{f}: optimizer.tensor_pids must be integers")
        if "class" in opt:
            need(f, opt, "class", str, "a string: the optimizer's class name", "optimizer")
    if "rng" in meta:
        rng = need(f, meta, "rng", dict, "an object of RNG states")
        need(f, rng, "python", list, "a list: Python's random.getstate()", "rng")
        need(f, rng, "numpy", list, "a list: NumPy's random.get_state()", "rng")
    return meta


def _ints(value: Any, n: int, hi: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < hi for v in value)
    )


def check_rng(json_file, tensor_file, tensors: dict[str, Tensor], rng: dict) -> None:
    """Try every saved RNG state on a scratch generator: the real ones are only set afterwards,
    all or none."""
    py, npy = rng["python"], rng["numpy"]
    f = tensor_file
    try:
        if "rng.torch" not in tensors:
            raise ValueError("rng.torch is missing")
        for k in (k for k in tensors if k.startswith("rng.")):
            if tensors[k].dtype != torch.uint8 or tensors[k].dim() != 1:
                raise ValueError(f"{k} is not a byte vector")
        torch.Generator().set_state(tensors["rng.torch"])
        f = json_file
        if len(py) != 3 or not _ints(py[1], 625, 2**32) or isinstance(py[0], bool):
            raise ValueError("rng.python is not [version, 625 integers, gauss]")
        random.Random().setstate((py[0], tuple(py[1]), py[2]))
        if len(npy) != 5 or not _ints(npy[1], 624, 2**32) or not is_finite_number(npy[4]):
            raise ValueError("rng.numpy is not [kind, 624 integers, pos, has_gauss, cached]")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in npy[2:4]):
            raise ValueError("rng.numpy's pos and has_gauss must be integers")
        if not 0 <= npy[2] <= 624:  # NumPy takes any pos, then reads past its key: a crash
            raise ValueError(f"rng.numpy's pos must be in 0..624, got {npy[2]}")
        np.random.RandomState().set_state(
            (npy[0], np.asarray(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4])
        )
    except (TypeError, ValueError, OverflowError, RuntimeError) as e:
        raise CheckpointError(
            f"{f}: the saved RNG state cannot be restored ({cap(e, 150)}); the file is damaged or "
            f"was edited: {USE_ANOTHER}, or load it with restore_rng=False"
        ) from e


def set_rng_state(tensors: dict[str, Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    names = [t for t in tensors if t.startswith("rng.cuda.")]
    cuda = [tensors[k] for k in sorted(names, key=lambda t: int(t.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, mt, gauss = meta["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _category(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return json_kind(value)


def _expected_keys(optimizer: torch.optim.Optimizer, group: dict) -> set[str] | None:
    """The state each parameter with a state has, for the optimizers lstmkit train makes."""
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        keys = {"step", "exp_avg", "exp_avg_sq"}
        return keys | {"max_exp_avg_sq"} if group.get("amsgrad") else keys
    if isinstance(optimizer, torch.optim.SGD):
        return {"momentum_buffer"} if group.get("momentum") else set()
    return None  # another optimizer: torch's own checks only


_KNOWN = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def _as_loaded(optimizer: torch.optim.Optimizer, group: dict) -> dict:
    """The group as load_state_dict will hold it: the optimizer's __setstate__ fills in the
    settings that are newer than the save (e.g. Adam's `decoupled_weight_decay`)."""
    g = {**group, "params": [torch.zeros(1)]}
    scratch = object.__new__(type(optimizer))
    try:
        scratch.__setstate__(
            {"defaults": dict(optimizer.defaults), "state": {}, "param_groups": [g]}
        )
    except Exception:  # an optimizer that cannot do this: its group as saved
        return group
    return g


def _check_groups(f, optimizer: torch.optim.Optimizer, opt: dict) -> list[dict]:
    live = type(optimizer).__name__
    saved_class = opt.get("class", live)
    if saved_class != live:
        raise CheckpointError(
            f"{f}: the optimizer state was saved by {short(saved_class)} and this run uses "
            f"{live}; {SAME_OPTIMIZER}"
        )
    groups = optimizer_from_flat({}, {"scalars": {}, "param_groups": opt["param_groups"]})
    groups = groups["param_groups"]
    saved_ids = [pid for g in groups for pid in g["params"]]
    if len(set(saved_ids)) != len(saved_ids):
        raise CheckpointError(f"{f}: a parameter id appears twice in param_groups; {USE_ANOTHER}")
    sizes = [len(g["params"]) for g in groups]
    live_sizes = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != live_sizes:
        raise CheckpointError(
            f"{f}: the optimizer state has parameter groups of {sizes} parameters, this "
            f"optimizer {live_sizes}; {SAME_OPTIMIZER}"
        )
    for i, g in enumerate(groups):
        g = _as_loaded(optimizer, g)
        missing = [k for k in optimizer.defaults if k not in g]
        if missing:
            raise CheckpointError(
                f"{f}: parameter group {i} lacks {live}'s settings {listing(missing)}: it was "
                f"saved by another optimizer, or edited; {SAME_OPTIMIZER}"
            )
        for k, default in optimizer.defaults.items():
            want, got = _category(default), _category(g[k])
            if want != got and not (default is None and isinstance(g[k], bool)):
                raise CheckpointError(
                    f"{f}: parameter group {i}: {k} is {short(g[k])} where {live} expects "
                    f"{want}; the file was edited: {USE_ANOTHER}"
                )
            if isinstance(g[k], float) and not is_finite_number(g[k]):
                raise CheckpointError(f"{f}: parameter group {i}: {k} is {g[k]}, not finite")
        if type(optimizer) not in _KNOWN:  # another constructor: its own arguments
            continue
        # the constructor's own range checks: lr >= 0, 0 <= betas < 1, ... with the settings it
        # takes (AdamW's defaults hold decoupled_weight_decay, which its __init__ does not)
        takes = inspect.signature(type(optimizer).__init__).parameters
        try:
            type(optimizer)([torch.zeros(1)], **{k: g[k] for k in optimizer.defaults if k in takes})
        except (ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(
                f"{f}: parameter group {i} has settings {live} refuses ({cap(e, 150)}); "
                f"{USE_ANOTHER}"
            ) from e
    return groups


def restore_optimizer(
    f, optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], opt: dict
) -> None:
    """Check the saved optimizer state against `optimizer`, then load it into it."""
    groups = _check_groups(f, optimizer, opt)
    params = dict(
        zip(
            itertools.chain.from_iterable(g["params"] for g in groups),
            itertools.chain.from_iterable(g["params"] for g in optimizer.param_groups),
        )
    )
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = (name.split(".", 2) + ["", ""])[:3]
        if not pid.isdigit() or int(pid) not in params or not key:
            raise CheckpointError(
                f"{f}: tensor {short(name)} names no parameter of the saved groups; {USE_ANOTHER}"
            )
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in opt["scalars"].items():
        if not pid.isdigit() or int(pid) not in params:
            raise CheckpointError(f"{f}: optimizer.scalars has {short(pid)}, not a parameter id")
        state.setdefault(int(pid), {}).update(entry)
    lost = [p for p in opt["tensor_pids"] if p not in state]
    if lost:
        raise CheckpointError(
            f"{f}: the optimizer tensors of parameters {listing(lost)} are missing (loading on "
            f"would silently restart the optimizer); {USE_ANOTHER}"
        )
    group_of = {pid: g for g in groups for pid in g["params"]}
    for pid, entry in sorted(state.items()):
        _check_param_state(f, optimizer, pid, entry, params[pid], group_of[pid])
    try:
        optimizer.load_state_dict(optimizer_from_flat(tensors, opt))
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"the optimizer state in {f} does not fit this optimizer ({cap(e, 150)}); "
            f"{SAME_OPTIMIZER}"
        ) from e


def _check_param_state(f, optimizer, pid: int, entry: dict, param: Tensor, group: dict) -> None:
    expected = _expected_keys(optimizer, group)
    if expected is not None and set(entry) != expected:
        raise CheckpointError(
            f"{f}: the optimizer state of parameter {pid} has "
            f"{listing(sorted(entry)) or 'nothing'}, {type(optimizer).__name__} keeps "
            f"{listing(sorted(expected)) or 'nothing'}: it is incomplete or from another "
            f"optimizer; {SAME_OPTIMIZER}"
        )
    for key, value in entry.items():
        if key == "step":
            ok = (
                is_finite_number(value) and value >= 0
                if not isinstance(value, Tensor)
                else value.numel() == 1 and value.is_floating_point() and float(value) >= 0
            )
        elif isinstance(value, Tensor):
            ok = value.shape == param.shape and value.dtype == param.dtype
        else:
            ok = expected is None  # an unknown optimizer's scalar: torch decides
        if not ok:
            what = (
                f"{tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor) else short(value)
            )
            raise CheckpointError(
                f"{f}: optimizer state {key} of parameter {pid} is {what}, the parameter is "
                f"{tuple(param.shape)} {param.dtype}; {SAME_OPTIMIZER}"
            )
