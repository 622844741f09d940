"""How the fused engine is chosen and what it refuses (the numbers are in test_fused_parity)."""

from __future__ import annotations

import statistics

import pytest
import torch
from fused_helpers import compiled_loops, one_thread  # noqa: F401  (fixtures)

import lstmkit


def test_auto_prefers_native_then_fused() -> None:
    plain = lstmkit.LSTM(3, 4)
    plain(torch.randn(5, 2, 3))
    assert plain.last_engine == "native"
    plain(torch.randn(5, 2, 3), return_trace=True)
    assert plain.last_engine == "fused"
    assert "'native' cannot" in plain.last_engine_reason
    for layer in (
        lstmkit.LSTM(3, 4, layer_norm=True),
        lstmkit.GRU(3, 4, zoneout=0.2),
        lstmkit.RNN(3, 4, recurrent_dropout=0.3),
        lstmkit.LSTM(3, 4, peephole=True),
    ):
        layer(torch.randn(5, 2, 3))
        assert layer.last_engine == "fused", layer.last_engine_reason


def _float32_errors(engine: str, seed: int) -> tuple[float, float]:
    """Norm-wise relative error of a float32 run of `engine` against a float64 reference run
    (same weights and input): (output, all parameter gradients concatenated)."""
    torch.manual_seed(seed)
    kw = dict(num_layers=2, peephole=True, layer_norm=True)
    layer = lstmkit.LSTM(8, 16, engine=engine, **kw)
    truth = lstmkit.LSTM(8, 16, engine="reference", **kw).double()
    truth.load_state_dict(layer.state_dict())
    x = torch.randn(20, 4, 8)
    (a, _), (b, _) = layer(x), truth(x.double())
    a.square().sum().backward()
    b.square().sum().backward()
    ga = torch.cat([p.grad.double().flatten() for p in layer.parameters()])
    gb = torch.cat([p.grad.flatten() for p in truth.parameters()])
    return ((a.double() - b).norm() / b.norm()).item(), ((ga - gb).norm() / gb.norm()).item()


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_close_to_float64(threads: int) -> None:
    """float32 rounding: the fused engine's error against float64 is that of float32 arithmetic,
    i.e. of the same layer run in float32 through torch's own ops (the reference engine).

    Why not a fixed bound on one run: how much float32 rounding grows over 20 steps of a
    layer-norm LSTM depends on the draw and on the summation order of the machine's BLAS (its
    kernels differ between Intel and AMD CPUs and between thread counts). Over 12 draws the
    gradient error of every float32 engine here spans 1e-6 .. 6e-5, and which engine is worst
    changes from draw to draw. So: typical errors (medians over draws) are compared, and each
    draw must stay far from what a real defect gives (a bfloat16 step or a wrong derivative:
    1e-3 and more)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = [_float32_errors("fused", seed) for seed in range(8)]
        ref = [_float32_errors("reference", seed) for seed in range(8)]
    finally:
        torch.set_num_threads(before)
    for seed, (out_err, grad_err) in enumerate(fused):
        assert out_err < 1e-5, f"seed {seed}: output error {out_err:.2e}"
        assert grad_err < 5e-4, f"seed {seed}: gradient error {grad_err:.2e}"
    for k, what in enumerate(("output", "gradient")):
        mf = statistics.median(e[k] for e in fused)
        mr = statistics.median(e[k] for e in ref)
        assert mf <= 3 * mr + 1e-7, f"median {what} error {mf:.2e} vs float32 torch ops {mr:.2e}"


def test_trace_gradients_flow() -> None:
    layer = lstmkit.GRU(3, 4, engine="fused")
    _, _, trace = layer(torch.randn(5, 2, 3), return_trace=True)
    assert trace.gates["z"].requires_grad
    trace.gates["z"].sum().backward()  # e.g. a penalty on the update gate
    assert layer.weight_hh_l0.grad is not None and layer.weight_hh_l0.grad.abs().sum() > 0


def test_double_backward_is_refused_with_a_clear_error() -> None:
    layer = lstmkit.LSTM(3, 4, engine="fused", dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = layer(x)
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)  # first order: fine
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(gx.sum(), x)  # second order would drop terms: refused


def test_inplace_change_of_the_output_is_caught() -> None:
    layer = lstmkit.LSTM(3, 4, engine="fused")
    out, _ = layer(torch.randn(5, 2, 3))
    out.mul_(2)  # the states are saved for backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


class _CountingLoops:
    """Wraps the compiled loops module and counts the calls that reach it."""

    def __init__(self, module) -> None:
        self.module, self.calls = module, []

    def __getattr__(self, name):
        fn = getattr(self.module, name)

        def counted(*args):
            self.calls.append(name)
            return fn(*args)

        return counted


@pytest.mark.parametrize(
    "extras, lengths, compiled",
    [
        ({}, None, True),
        ({"peephole": True, "coupled": True}, None, True),
        ({"recurrent_dropout": 0.3}, [7, 2, 5], True),
        ({"layer_norm": True, "peephole": True}, [7, 2, 5], True),
        ({"proj_size": 3, "zoneout": 0.3}, [7, 2, 5], True),
        ({"zoneout": (0.2, 0.4)}, [7, 2, 5], True),
        ({"dtype": torch.bfloat16}, None, False),
    ],
)
@pytest.mark.usefixtures("compiled_loops")
def test_compiled_loops_serve_the_lstm(extras, lengths, compiled, monkeypatch):
    """Which LSTM calls run the compiled loops (forward and backward: float32 / float64 on CPU,
    every option), and that their results match the pure-PyTorch loops."""
    from lstmkit.engines import cpu_loops, fused_lstm

    counter = _CountingLoops(cpu_loops.cpu_loops())
    monkeypatch.setattr(fused_lstm, "cpu_loops", lambda: counter)
    torch.manual_seed(0)
    layer = lstmkit.LSTM(5, 8, num_layers=2, bidirectional=True, engine="fused", **extras)
    x = torch.randn(7, 3, 5, dtype=extras.get("dtype"), requires_grad=True)
    torch.manual_seed(1)
    out, _ = layer(x, lengths=lengths)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    expected = ["lstm_forward_loop"] * 4 + ["lstm_backward_loop"] * 4 if compiled else []
    assert sorted(counter.calls) == sorted(expected)
    monkeypatch.setenv(cpu_loops.ENV_SWITCH, "0")
    torch.manual_seed(1)
    out_py, _ = layer(x, lengths=lengths)
    (gx_py,) = torch.autograd.grad(out_py.square().sum(), x)
    torch.testing.assert_close(out, out_py, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(gx, gx_py, atol=2e-6, rtol=1e-5)


@pytest.mark.usefixtures("compiled_loops")
@pytest.mark.parametrize("extras", [{}, {"peephole": True}, {"coupled": True}])
def test_saturated_gates_stay_finite_in_float32(extras, monkeypatch):
    """Pre-activations far beyond the sigmoid's range (|pre| ~ 1e2 .. 1e4): exp overflows in
    float32; the compiled gates must still saturate to 0 / 1 as the Python loops do."""
    from lstmkit.engines import cpu_loops

    torch.manual_seed(0)
    layer = lstmkit.LSTM(4, 16, engine="fused", **extras)
    x = torch.randn(5, 3, 4) * 100
    out, _ = layer(x)
    assert torch.isfinite(out).all()
    monkeypatch.setenv(cpu_loops.ENV_SWITCH, "0")
    out_py, _ = layer(x)
    torch.testing.assert_close(out, out_py, atol=1e-5, rtol=1e-5)
