"""Engine selection: "auto" uses torch's kernel where it is exact, says why otherwise."""

from __future__ import annotations

import logging

import pytest
import torch

import lstmkit
from lstmkit import engines


def test_auto_uses_native_for_plain_configurations():
    for m in (
        lstmkit.LSTM(3, 4, 2, bidirectional=True, proj_size=2),
        lstmkit.GRU(3, 4),
        lstmkit.RNN(3, 4, nonlinearity="relu"),
        lstmkit.LSTM(3, 4, weight_drop=0.5),
    ):
        m(torch.randn(5, 2, 3))
        assert m.last_engine == "native", m.last_engine_reason
        assert m.last_engine_reason == "auto chose 'native'"


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"peephole": True}, "peephole"),
        ({"layer_norm": True}, "layer_norm"),
        ({"coupled": True}, "coupled"),
        ({"recurrent_dropout": 0.2}, "recurrent dropout"),
        ({"zoneout": 0.1}, "zoneout"),
    ],
)
def test_auto_explains_why_not_native(kwargs, reason, caplog):
    m = lstmkit.LSTM(3, 4, **kwargs)
    with caplog.at_level(logging.DEBUG, logger="lstmkit.engines"):
        m(torch.randn(5, 2, 3))
    assert m.last_engine != "native"
    assert "'native' cannot" in m.last_engine_reason and reason in m.last_engine_reason
    assert m.last_engine_reason in caplog.text


def test_eval_recurrent_dropout_goes_native():
    m = lstmkit.LSTM(3, 4, recurrent_dropout=0.3).eval()
    m(torch.randn(5, 2, 3))
    assert m.last_engine == "native"


def test_registry_lists_engines_and_priorities():
    assert {"reference", "native"} <= set(engines.ENGINES)
    assert engines.ENGINES["native"].priority > engines.ENGINES["reference"].priority
    assert lstmkit.ENGINES is engines.ENGINES


def test_repr_mentions_extras():
    r = repr(lstmkit.LSTM(3, 4, num_layers=2, peephole=True, zoneout=0.1))
    assert "num_layers=2" in r and "peephole=True" in r and "zoneout=(0.1, 0.1)" in r
