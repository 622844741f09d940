"""engine="auto"'s measured rules (lstmkit.engines.auto): when each applies, and that the docs
list every one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engines.auto import RULES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "engines.md"


def test_ragged_training_on_cpu_goes_to_the_fused_engine() -> None:
    layer = lstmkit.LSTM(4, 5)
    x = torch.randn(6, 3, 4)
    lengths = torch.tensor([6, 3, 2])
    layer(x, lengths=lengths)
    assert layer.last_engine == "fused"
    assert "rule 'ragged training on CPU'" in layer.last_engine_reason
    layer(pack_padded_sequence(x, lengths))
    assert layer.last_engine == "fused"
    with torch.no_grad():  # inference: torch's packed kernel is the faster one
        layer(x, lengths=lengths)
    assert layer.last_engine == "native"
    layer(x)  # no lengths: torch's kernel
    assert layer.last_engine == "native"
    for p in layer.parameters():
        p.requires_grad_(False)
    layer(x, lengths=lengths)  # frozen and no input gradient: no graph, no training step
    assert layer.last_engine == "native"
    layer(x.requires_grad_(), lengths=lengths)
    assert layer.last_engine == "fused"


def test_a_rule_gives_way_where_its_engine_cannot_run() -> None:
    layer = lstmkit.nn.layer_class("lstm")(4, 5)
    layer.engine = "native"  # an explicit engine is never overridden by a rule
    layer(torch.randn(6, 3, 4), lengths=torch.tensor([6, 3, 2]))
    assert layer.last_engine == "native"


def test_every_rule_is_documented_with_its_evidence() -> None:
    text = DOCS.read_text()
    for rule in RULES:
        assert f"**{rule.name}**" in text, f"docs/engines.md does not list the rule {rule.name!r}"
        assert "benchmarks/results/" in rule.evidence
