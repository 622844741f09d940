"""Engines compute a RecurrentCall. `select` implements engine="auto" and says why it chose.

| engine      | what it is                                          | supports                     |
|-------------|-----------------------------------------------------|------------------------------|
| "native"    | torch's own kernels (oneDNN / cuDNN)                | plain cells, weight drop     |
| "onnx"      | inside torch.onnx.export only: ONNX's LSTM operator | peephole / coupled LSTM      |
| "triton"    | GPU: one operator per layer-direction, one Triton   | everything; GPU only (tests  |
|             | kernel per step, cuBLAS for the matmuls             | use TRITON_INTERPRET=1)      |
| "fused"     | one PyTorch operator per layer-direction with a     | every option of LSTM / GRU / |
|             | hand-written backward through time                  | RNN; no double backward      |
| "reference" | autograd through the readable cell steps            | every registered cell        |

Per-sample resets run on triton, fused and reference.
Interventions (lstmkit.intervene) run on fused and reference.
"auto" tries the measured rules of lstmkit.engines.auto first, then the priority order. The
contract is lstmkit.engines.base; measured speeds and the rules of "auto" are in docs/engines.md;
streams (one step per call) in lstmkit.nn.stream and docs/streaming.md.
"""

from __future__ import annotations

import importlib
import logging

import torch

from lstmkit.engines.auto import RULES
from lstmkit.engines.base import Engine, RecurrentCall, RecurrentResult

log = logging.getLogger("lstmkit.engines")

# One line per engine module; each defines exactly one Engine subclass.
ENGINE_MODULES = (
    "lstmkit.engines.reference",
    "lstmkit.engines.native",
    "lstmkit.engines.fused",
    "lstmkit.engines.triton_gpu",
    "lstmkit.engines.onnx_export",
)

ENGINES: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    ENGINES[engine.name] = engine
    return engine


def _load() -> None:
    for mod_name in ENGINE_MODULES:
        mod = importlib.import_module(mod_name)
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Engine) and obj.__module__ == mod_name:
                register(obj())


_load()


def check_engine_name(name: str) -> None:
    if name != "auto" and name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; expected 'auto' or one of {sorted(ENGINES)}")


def _unsupported(engine: Engine, call: RecurrentCall) -> str | None:
    if call.intervention is not None and not engine.supports_interventions:
        return "interventions (ablation / patching) are not in its kernels"
    if call.resets is not None and not engine.supports_resets:
        return "per-sample resets are not in its kernels"
    return engine.unsupported(call)


def select(name: str, call: RecurrentCall) -> tuple[Engine, str]:
    """The engine to run `call` and a sentence saying why."""
    if name != "auto":
        engine = ENGINES[name]
        reason = _unsupported(engine, call)
        if reason is not None:
            raise ValueError(
                f"engine={name!r} cannot run this configuration: {reason}. "
                f"Use engine='auto' (picks a capable engine) or engine='reference'."
            )
        return engine, f"engine={name!r} was requested"
    skipped = []
    compiling = torch.compiler.is_compiling()  # torch.compile or torch.export tracing

    def cannot(engine: Engine) -> str | None:
        reason = _unsupported(engine, call)
        if reason is None and compiling and not engine.traceable:
            reason = (
                "under torch.compile its kernels run outside the graph (a graph break), and "
                "torch.export fixes their sequence length"
            )
        return reason

    for rule in RULES:  # measured exceptions to the priority order (lstmkit.engines.auto)
        engine = ENGINES.get(rule.engine)
        if engine is not None and rule.applies(call) and cannot(engine) is None:
            return engine, f"auto chose {engine.name!r} by the rule {rule.name!r}: {rule.evidence}"
    for engine in sorted(ENGINES.values(), key=lambda e: -e.priority):
        reason = cannot(engine)
        if reason is None:
            why = f"auto chose {engine.name!r}"
            if skipped:
                why += " because " + "; ".join(skipped)
            if not torch.compiler.is_compiling():  # logging inside a traced graph breaks it
                log.debug(why)
            return engine, why
        skipped.append(f"{engine.name!r} cannot: {reason}")
    raise RuntimeError("no engine can run this call: " + "; ".join(skipped))  # reference can


__all__ = ["ENGINES", "Engine", "RecurrentCall", "RecurrentResult", "register", "select"]
