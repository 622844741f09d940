"""The Triton engine's kernels, run on CPU by Triton's interpreter, against the reference engine.

The same kernels run compiled on a GPU; CI has none, so correctness is checked here in float64
(1e-8) over every cell and option, and in float32 / bfloat16 / float16 (as their precision
allows). Both engines get the same dropout / zoneout masks (same seed, masks sampled by the layer).
"""

from __future__ import annotations

import os

import parity
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


def run_both(m, x, lengths=None, hx=None, seed=0) -> tuple[parity.Run, parity.Run]:
    """Forward + backward with the reference and the Triton engine on the same masks (the
    Triton engine's traces are detached: the loss reads outputs and states only)."""

    def make():
        xi = x.clone().requires_grad_(True)
        return xi, xi

    runs = []
    for engine in ("reference", "triton"):
        runs.append(parity.run(m, make, hx, engine=engine, seed=seed, lengths=lengths,
                               return_trace=True, trace_in_loss=False))  # fmt: skip
        assert m.last_engine == engine, m.last_engine_reason
    return runs[0], runs[1]


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
    want, got = run_both(m, x, lengths, hx)
    parity.assert_same(got, want, torch.float64)


@pytest.mark.parametrize(
    "dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)]
)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_low_precision(kind, dtype, atol):
    """Half-precision runs agree with the reference engine run in the same dtype."""
    m = getattr(lstmkit, kind)(4, 8, num_layers=1).to(dtype)
    x = torch.randn(5, 2, 4).to(dtype)
    want, got = run_both(m, x)
    assert got.output.dtype == dtype and got.states[-1].dtype == dtype
    torch.testing.assert_close(got.output.float(), want.output.float(), atol=atol, rtol=0)
    gx, gx_ref = got.grads["input"].float(), want.grads["input"].float()
    torch.testing.assert_close(gx, gx_ref, atol=atol * 4, rtol=0)


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


RESET_CASES = [  # (kind, extras, bidirectional, lengths)
    ("LSTM", {}, True, [6, 4, 5]),
    ("LSTM", {"peephole": True, "proj_size": 2, "zoneout": (0.3, 0.2)}, False, None),
    ("LSTM", {"coupled": True, "layer_norm": True}, True, None),
    ("GRU", {"zoneout": 0.25}, True, [6, 3, 5]),
    ("RNN", {"layer_norm": True}, False, [6, 4, 5]),
]


@pytest.mark.parametrize("kind,extras,bidirectional,lengths", RESET_CASES)
def test_resets_match_the_reference(kind, extras, bidirectional, lengths) -> None:
    """Per-sample resets (values and gradients of input, initial states and weights)."""
    torch.manual_seed(0)
    m = getattr(lstmkit, kind)(3, 4, 2, bidirectional=bidirectional, dtype=torch.float64, **extras)
    m.eval()
    T, B = 6, 3
    x = torch.randn(T, B, 3, dtype=torch.float64)
    hx = tuple(torch.randn(s, dtype=torch.float64) for s in m.state_shapes(B))
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[2, 0] = resets[4, 0] = resets[1, 1] = resets[5, 2] = True
    L = None if lengths is None else torch.tensor(lengths)
    results = []
    for engine in ("reference", "triton"):
        m.engine = engine
        xi = x.clone().requires_grad_()
        h = tuple(s.clone().requires_grad_() for s in hx)
        out, h_n = m(xi, h if len(h) > 1 else h[0], lengths=L, resets=resets)
        assert m.last_engine == engine, m.last_engine_reason
        h_n = h_n if isinstance(h_n, tuple) else (h_n,)
        loss = parity.loss_of([out, *h_n])
        grads = torch.autograd.grad(loss, [xi, *h, *m.parameters()])
        results.append([out, *h_n, *grads])
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=0)
