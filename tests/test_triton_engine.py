"""The Triton engine's kernels, run on CPU by Triton's interpreter, against the reference engine.

The same kernels run compiled on a GPU; CI has none, so correctness is checked here in float64
(1e-8) over every cell and option, and in float32 / bfloat16 / float16 (as their precision
allows). Both engines get the same dropout / zoneout masks (same seed, masks sampled by the layer).
"""

from __future__ import annotations

import os

import pytest
import torch

import lstmkit

# Triton picks interpreter or compiler when it is imported (its own library functions are
# decorated then), so the flag must be set before the first `import triton` of this process.
# It is restored at once so that other test modules see a machine without a Triton engine.
os.environ["TRITON_INTERPRET"] = "1"
try:
    pytest.importorskip("triton", reason="the Triton engine needs triton (pip install -e '.[dev]')")
finally:
    del os.environ["TRITON_INTERPRET"]


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # what TritonEngine.unsupported() looks at


def run_both(m, x, lengths=None, hx=None, seed=0):
    """Forward + backward with the reference and the Triton engine on the same masks."""
    results = []
    for engine in ("reference", "triton"):
        m.engine = engine
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(seed)
        out, h_n, trace = m(xi, hx, lengths=lengths, return_trace=True)
        assert m.last_engine == engine, m.last_engine_reason
        states = h_n if isinstance(h_n, tuple) else (h_n,)
        g = torch.Generator().manual_seed(1)
        loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
        for s in states:
            loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters()}
        results.append((out, states, trace, xi.grad, grads))
    return results


def assert_same(results, atol):
    (o0, s0, t0, gx0, gp0), (o1, s1, t1, gx1, gp1) = results
    torch.testing.assert_close(o1, o0, atol=atol, rtol=0)
    for a, b in zip(s1, s0):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
    for name in t0.gates:
        torch.testing.assert_close(t1.gates[name], t0.gates[name].detach(), atol=atol, rtol=0)
    if t0.cell is not None:
        torch.testing.assert_close(t1.cell, t0.cell.detach(), atol=atol, rtol=0)
    torch.testing.assert_close(t1.hidden, t0.hidden.detach(), atol=atol, rtol=0)
    torch.testing.assert_close(gx1, gx0, atol=atol, rtol=0)
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], atol=atol, rtol=0, msg=name)


CASES = [  # (kind, num_layers, bidirectional, batch_first, bias, lengths, extras, training)
    ("LSTM", 1, False, False, True, None, {}, False),
    ("LSTM", 2, True, True, True, [4, 2, 3], {}, False),
    ("LSTM", 2, True, False, False, [1, 4, 2], {"recurrent_dropout": 0.4, "dropout": 0.3}, True),
    ("LSTM", 1, False, True, True, [3, 4, 1], {"weight_drop": 0.5}, True),
    ("LSTM", 1, True, False, True, [3, 4, 1], {"peephole": True, "forget_bias": 1.0}, False),
    ("LSTM", 1, False, False, True, [2, 4, 3], {"coupled": True, "peephole": True}, False),
    ("LSTM", 1, True, False, True, [4, 1, 3], {"layer_norm": True}, False),
    ("LSTM", 1, False, False, False, None, {"layer_norm": True, "peephole": True}, False),
    ("LSTM", 1, False, False, True, [4, 2, 3], {"zoneout": (0.3, 0.5)}, True),
    ("LSTM", 1, False, False, True, [4, 2, 3], {"zoneout": (0.3, 0.5)}, False),
    ("LSTM", 2, True, False, True, [4, 2, 3], {"proj_size": 2}, False),
    (
        "LSTM",
        1,
        False,
        True,
        True,
        [4, 2, 3],
        {"proj_size": 3, "zoneout": 0.4, "layer_norm": True, "recurrent_dropout": 0.3},
        True,
    ),
    ("GRU", 1, False, False, True, None, {}, False),
    ("GRU", 2, True, True, True, [4, 2, 3], {}, False),
    ("GRU", 2, False, False, False, [2, 4, 4], {"recurrent_dropout": 0.4, "dropout": 0.3}, True),
    ("GRU", 1, True, False, True, [2, 4, 4], {"layer_norm": True, "zoneout": 0.3}, True),
    ("GRU", 1, False, False, True, [2, 4, 4], {"zoneout": 0.3}, False),
    ("RNN", 2, True, False, True, [2, 4, 1], {}, False),
    ("RNN", 1, False, False, True, [2, 4, 3], {"nonlinearity": "relu", "layer_norm": True}, False),
    ("RNN", 1, False, True, False, None, {"zoneout": 0.5, "recurrent_dropout": 0.2}, True),
]


def _case_id(c) -> str:
    kind, L, bi, bf, bias, lengths, extras, training = c
    return (
        f"{kind}-L{L}-{'bi' if bi else 'uni'}-{'bf' if bf else 'tf'}-"
        f"{'bias' if bias else 'nobias'}-{'len' if lengths else 'full'}-"
        f"{'+'.join(extras) or 'plain'}-{'train' if training else 'eval'}"
    )


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_float64_matches_reference(case):
    kind, L, bi, bf, bias, lengths, extras, training = case
    m = getattr(lstmkit, kind)(
        3, 5, num_layers=L, bidirectional=bi, batch_first=bf, bias=bias, **extras
    ).double()
    with torch.no_grad():  # layer-norm gains and peepholes away from their initial values
        for name, p in m.named_parameters():
            if "ln_" in name or "peep" in name:
                p.uniform_(0.5, 1.5)
    m.train(training)
    x = torch.randn((3, 4, 3) if bf else (4, 3, 3), dtype=torch.float64)
    n = L * (2 if bi else 1)
    h0 = torch.randn(n, 3, extras.get("proj_size") or 5, dtype=torch.float64)
    hx = (h0, torch.randn(n, 3, 5, dtype=torch.float64)) if kind == "LSTM" else h0
    lengths = None if lengths is None else torch.tensor(lengths)
    assert_same(run_both(m, x, lengths, hx), atol=1e-8)


@pytest.mark.parametrize(
    "dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)]
)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_low_precision(kind, dtype, atol):
    """Half-precision runs agree with the reference engine run in the same dtype."""
    m = getattr(lstmkit, kind)(4, 8, num_layers=1).to(dtype)
    x = torch.randn(5, 2, 4).to(dtype)
    (o0, s0, _, gx0, gp0), (o1, s1, _, gx1, gp1) = run_both(m, x)
    assert o1.dtype == dtype and s1[-1].dtype == dtype
    torch.testing.assert_close(o1.float(), o0.float(), atol=atol, rtol=0)
    torch.testing.assert_close(gx1.float(), gx0.float(), atol=atol * 4, rtol=0)


def test_auto_needs_a_gpu_or_the_interpreter(monkeypatch):
    from lstmkit.engines import ENGINES

    x = torch.randn(4, 2, 3)
    monkeypatch.delenv("TRITON_INTERPRET")
    m = lstmkit.LSTM(3, 5, peephole=True)
    m(x)
    assert "'triton' cannot: the Triton engine needs a CUDA GPU" in m.last_engine_reason
    assert m.last_engine != "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    m(x)
    assert m.last_engine == "triton"
    assert ENGINES["native"].priority > ENGINES["triton"].priority > ENGINES["fused"].priority
