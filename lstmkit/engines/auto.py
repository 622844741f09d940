"""The rules of engine="auto": where measurements say an engine other than the first capable one
in priority order is faster, and exact. Each rule names its engine and its evidence; `select`
tries the rules first and says in `last_engine_reason` which one chose. A rule whose engine
cannot run the call is passed over (the priority order then decides, as without rules).

The figures are in benchmarks/results/varlen.md (python benchmarks/varlen.py --threads 1);
docs/engines.md lists the rules with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lstmkit.engines.base import RecurrentCall


@dataclass(frozen=True)
class AutoRule:
    name: str
    engine: str
    applies: Callable[[RecurrentCall], bool]
    evidence: str  # the measurement, as last_engine_reason quotes it


def needs_grad(call: RecurrentCall) -> bool:
    """Whether this forward builds a graph (a training step), as autograd will see it."""
    if not torch.is_grad_enabled():
        return False
    tensors = [call.x, *call.hx, *(t for p in call.params for t in vars(p).values())]
    return any(t is not None and t.requires_grad for t in tensors)


def _ragged_training_on_cpu(call: RecurrentCall) -> bool:
    return call.lengths is not None and call.x.device.type == "cpu" and needs_grad(call)


RULES: tuple[AutoRule, ...] = (
    AutoRule(
        name="ragged training on CPU",
        engine="fused",
        applies=_ragged_training_on_cpu,
        evidence=(
            "variable lengths (lengths= or a PackedSequence) in a training step on CPU: the "
            "fused engine masks the padded batch: 0.20x-0.47x the time of torch's packed kernel "
            "(what auto runs otherwise) for an LSTM, 0.34x-0.70x for the GRU and the RNN, "
            "measured (benchmarks/results/varlen.md)"
        ),
    ),
)
