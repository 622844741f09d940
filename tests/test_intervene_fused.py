"""The fused engine's interventions equal the reference engine's (float64, 1e-10): outputs, final
states, traces and the gradients of the input, of every weight and of patched values, option by
option, with mixed lengths and per-sample resets, in the compiled and the pure-PyTorch loops.
What an edit means is tested against hand-written loops in test_intervene.py."""

from __future__ import annotations

import pytest
import torch
from fused_helpers import compiled_loops, one_thread  # noqa: F401  (fixtures)

import lstmkit
from lstmkit import Intervention
from lstmkit.engines import cpu_loops, fused_lstm
from lstmkit.intervene import Edit

F64 = torch.float64
TOL = 1e-10
T, B, I, H = 6, 3, 3, 4

CASES = [
    ("LSTM", {}),
    ("LSTM", {"proj_size": 2}),
    ("LSTM", {"peephole": True, "coupled": True}),
    ("LSTM", {"layer_norm": True, "peephole": True}),
    ("LSTM", {"bidirectional": True}),
    ("LSTM", {"zoneout": (0.3, 0.2)}),  # training masks, and the expectation in eval below
    ("LSTM", {"recurrent_dropout": 0.25, "dropout": 0.2}),
    ("GRU", {}),
    ("GRU", {"layer_norm": True, "bidirectional": True}),
    ("RNN", {}),
    ("RNN", {"nonlinearity": "relu", "zoneout": 0.3}),
]


def intervention(kind: str, kw: dict, value: torch.Tensor) -> Intervention:
    """Every kind of edit at once: patched values (differentiable) at some steps, constants,
    the whole state of a layer, the other direction, and two edits of one unit (the later wins)."""
    P = kw.get("proj_size") or H
    edit = Intervention((Edit(layer=0, state="h", units=[0, P - 1], steps=[1, 2, 5], value=value),))
    edit += Intervention.ablate(layer=1, units=[1], steps=[3, 4], value=0.3)
    edit += Intervention.ablate(layer=1, units=[1], steps=[4], value=-2.0)
    if kind == "LSTM":
        edit += Intervention.ablate(layer=0, state="c", units=[2, 3], steps=[0, 4])
        edit += Intervention.ablate(layer=1, state="c", units=[0], value=-0.5)
    if kw.get("bidirectional"):
        edit += Intervention.ablate(layer=0, units=[1], steps=[2, 5], direction=1)
        edit += Intervention.ablate(layer=1, steps=[0], direction=1)  # every unit
    return edit


def run(layer, engine: str, x, edit, value, lengths=None, resets=None, seed=1):
    """One forward on `engine` (masks drawn from the same seed) and the gradients of a loss that
    reads everything: outputs, final states, every trace."""
    layer.engine = engine
    torch.manual_seed(seed)
    out, h, trace = layer(x, lengths=lengths, intervention=edit, resets=resets, return_trace=True)
    assert layer.last_engine == engine
    states = h if isinstance(h, tuple) else (h,)
    traced = [trace.hidden, *trace.gates.values()] + (
        [trace.cell] if trace.cell is not None else []
    )
    gen = torch.Generator().manual_seed(2)
    seen = [out, *states, *traced]
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=F64)).sum() for t in seen)
    wrt = [x, value, *layer.parameters()]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return seen, grads


def assert_same(a, b) -> None:
    (seen_a, grads_a), (seen_b, grads_b) = a, b
    for p, q in zip(seen_a, seen_b):
        assert (p - q).abs().max() < TOL
    for p, q in zip(grads_a, grads_b):
        assert (p is None) == (q is None)
        if p is not None:
            assert (p - q).abs().max() < TOL


# the LSTM's loops run compiled or in Python; the GRU's and the RNN's are Python only
GRID = [
    (k, kw, loops)
    for k, kw in CASES
    for loops in (["compiled", "python"] if k == "LSTM" else ["python"])
]


@pytest.mark.parametrize(
    "kind, kw, loops", GRID, ids=[f"{k}-{'-'.join(kw) or 'plain'}-{loops}" for k, kw, loops in GRID]
)
@pytest.mark.usefixtures("compiled_loops")
def test_fused_interventions_equal_the_reference(kind, kw, loops, monkeypatch):
    if loops == "python":
        monkeypatch.setenv(cpu_loops.ENV_SWITCH, "0")
    torch.manual_seed(0)
    layer = getattr(lstmkit, kind)(I, H, 2, **kw).to(F64)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    value = torch.randn(T, B, 2, dtype=F64, requires_grad=True)
    edit = intervention(kind, kw, value)
    for lengths in (None, torch.tensor([6, 3, 5])):
        assert_same(
            run(layer, "reference", x, edit, value, lengths),
            run(layer, "fused", x, edit, value, lengths),
        )
    layer.eval()  # evaluation-mode zoneout (the expectation), no dropout
    assert_same(run(layer, "reference", x, edit, value), run(layer, "fused", x, edit, value))


@pytest.mark.parametrize("loops", ["compiled", "python"])
@pytest.mark.usefixtures("compiled_loops")
def test_a_patched_cell_value_gets_its_gradient_on_the_fused_engine(loops, monkeypatch):
    """A differentiable value patched into the LSTM's cell state (the other tests patch c with
    constants only): its gradient on the fused engine equals the reference engine's, and is not
    zero, since the loss reads every later step."""
    if loops == "python":
        monkeypatch.setenv(cpu_loops.ENV_SWITCH, "0")
    torch.manual_seed(0)
    layer = lstmkit.LSTM(I, H, 2).to(F64)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    value = torch.randn(T, B, 2, dtype=F64, requires_grad=True)
    edit = Intervention((Edit(layer=1, state="c", units=[0, 3], steps=[1, 4], value=value),))
    fused = run(layer, "fused", x, edit, value)
    assert_same(run(layer, "reference", x, edit, value), fused)
    d_value = fused[1][1]
    assert d_value[[1, 4]].abs().min() > 0  # the patched steps' units all carry a gradient
    assert d_value[[0, 2, 3, 5]].abs().max() == 0  # steps not patched: the value is not read


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_fused_interventions_with_resets_and_lengths(kind):
    torch.manual_seed(0)
    layer = getattr(lstmkit, kind)(I, H, 2, bidirectional=True).to(F64)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    value = torch.randn(T, B, 2, dtype=F64, requires_grad=True)
    edit = intervention(kind, {"bidirectional": True}, value)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[3, 0] = resets[2, 2] = True
    lengths = torch.tensor([6, 4, 5])
    assert_same(
        run(layer, "reference", x, edit, value, lengths, resets),
        run(layer, "fused", x, edit, value, lengths, resets),
    )


@pytest.mark.usefixtures("compiled_loops")
def test_the_compiled_loops_apply_the_edits(monkeypatch):
    """Edited LSTM calls run in the compiled loops (forward and backward), not a fallback, and
    an edit changes what they compute."""
    calls = []
    module = cpu_loops.cpu_loops()

    class Counting:
        def __getattr__(self, name):
            def counted(*args):
                calls.append(name)
                return getattr(module, name)(*args)

            return counted

    monkeypatch.setattr(fused_lstm, "cpu_loops", lambda: Counting())
    torch.manual_seed(0)
    layer = lstmkit.LSTM(I, H, engine="fused").to(F64)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    edit = Intervention.ablate(layer=0, state="c", units=[1], steps=[2])
    out, _ = layer(x, intervention=edit)
    out.sum().backward()
    assert calls == ["lstm_forward_loop", "lstm_backward_loop"]
    plain, _ = layer(x)
    assert (out[:2] - plain[:2]).abs().max() == 0  # the same before the edit
    assert (out[3:] - plain[3:]).abs().max() > 1e-4  # and not after it


def test_an_edited_fused_layer_exports_and_compiles_its_edit():
    """torch.export of a module whose forward ablates a cell: the fused operators carry the edit
    into the exported graph (the masks and values are ordinary tensors in it)."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(I, H, 2, engine="fused")
    edit = Intervention.ablate(layer=1, units=[1, 2], state="c", steps=[2, 3])
    edit += Intervention.ablate(layer=0, units=[0])

    class Ablated(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = layer

        def forward(self, x):
            return self.rnn(x, intervention=edit)[0]

    x = torch.randn(T, B, I)
    exported = torch.export.export(Ablated(), (x,))
    assert any("lstm_direction" in str(n.target) for n in exported.graph.nodes)
    want = layer(x, intervention=edit)[0]
    assert torch.equal(exported.module()(x), want)
    assert not torch.equal(want, layer(x)[0])
