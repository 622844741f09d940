"""Every registered engine against the reference engine, through the one harness (parity.py).

The engines come from lstmkit.engines.ENGINES, so registering an engine puts it under test;
a configuration an engine does not compute is skipped with the reason its `unsupported()`
gives. float64, TOLERANCES[float64] (1e-8): outputs, final states, traces and the gradients of
the input, the initial states and every parameter; the same masks for both runs (the layer
samples them from the seeded RNG). Wider grids per engine: test_fused_parity.py,
test_triton_engine.py; against torch.nn: test_parity.py, test_fused_torch.py.
"""

from __future__ import annotations

import parity
import pytest
import torch
from fused_helpers import (
    make_call,
    one_thread,  # noqa: F401  (autouse fixture: 1 torch thread)
)

import lstmkit
from lstmkit import engines

F64 = torch.float64
T, B, I, H = 5, 3, 4, 6
LENGTHS = [5, 2, 4]

# (layer class, constructor keywords, lengths, training, trace)
CASES = {
    "lstm": (lstmkit.LSTM, {}, None, False, False),
    "lstm-2x-bidir-lengths": (
        lstmkit.LSTM,
        dict(num_layers=2, bidirectional=True),
        LENGTHS,
        False,
        False,
    ),  # fmt: skip
    "lstm-peephole-coupled-trace": (
        lstmkit.LSTM,
        dict(peephole=True, coupled=True),
        LENGTHS,
        False,
        True,
    ),  # fmt: skip
    "lstm-layer-norm-proj": (
        lstmkit.LSTM,
        dict(layer_norm=True, proj_size=3),
        None,
        False,
        False,
    ),  # fmt: skip
    "lstm-zoneout-recurrent-dropout-train": (
        lstmkit.LSTM,
        dict(zoneout=(0.3, 0.2), recurrent_dropout=0.3),
        LENGTHS,
        True,
        False,
    ),  # fmt: skip
    "gru-bidir-trace": (lstmkit.GRU, dict(bidirectional=True), LENGTHS, False, True),
    "gru-layer-norm-zoneout-eval": (
        lstmkit.GRU,
        dict(layer_norm=True, zoneout=0.3),
        None,
        False,
        False,
    ),  # fmt: skip
    "rnn-relu-2x": (
        lstmkit.RNN,
        dict(nonlinearity="relu", num_layers=2),
        LENGTHS,
        False,
        False,
    ),  # fmt: skip
}
ENGINE_NAMES = sorted(n for n in engines.ENGINES if n != "reference")


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_engine_matches_reference(engine: str, case: str, monkeypatch) -> None:
    if engine == "triton":  # on CPU, through Triton's interpreter (tests/conftest.py)
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    cls, kw, lengths, training, trace = CASES[case]
    torch.manual_seed(0)
    layer = cls(I, H, dtype=F64, **kw).train(training)
    with torch.no_grad():  # gains and peepholes away from their initial 1 / small values
        for name, p in layer.named_parameters():
            if "ln_" in name or "peep" in name:
                p.uniform_(0.5, 1.5)
    x0 = torch.randn(T, B, I, dtype=F64)
    lengths = None if lengths is None else torch.tensor(lengths)
    reason = engines.ENGINES[engine].unsupported(make_call(layer, x0, None, lengths, trace))
    if reason is not None:
        pytest.skip(f"{engine}: {reason}")
    n = layer.num_layers * layer.num_directions
    hx = [torch.randn(n, B, layer.proj_size or H, dtype=F64)]
    if "c" in layer.cell.state_names:
        hx.append(torch.randn(n, B, H, dtype=F64))

    def make():
        x = x0.clone().requires_grad_(True)
        return x, x

    detached = engine == "triton"  # its traces carry no gradient (documented)
    kwargs = dict(lengths=lengths, return_trace=trace, trace_in_loss=not detached)
    want = parity.run(layer, make, tuple(hx), engine="reference", **kwargs)
    got = parity.run(layer, make, tuple(hx), engine=engine, **kwargs)
    assert layer.last_engine == engine
    parity.assert_same(got, want, F64)
