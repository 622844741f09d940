"""How the fused engine is chosen and what it refuses (the numbers are in test_fused_parity)."""

from __future__ import annotations

import pytest
import torch
from fused_helpers import one_thread  # noqa: F401  (autouse fixture)

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


def test_float32_close_to_reference() -> None:
    torch.manual_seed(0)
    fused = lstmkit.LSTM(8, 16, num_layers=2, peephole=True, layer_norm=True, engine="fused")
    ref = lstmkit.LSTM(8, 16, num_layers=2, peephole=True, layer_norm=True, engine="reference")
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(20, 4, 8)
    (a, _), (b, _) = fused(x), ref(x)
    a.square().sum().backward()
    b.square().sum().backward()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for pa, pb in zip(fused.parameters(), ref.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-4, rtol=1e-4)


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
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


def test_inplace_change_of_the_output_is_caught() -> None:
    layer = lstmkit.LSTM(3, 4, engine="fused")
    out, _ = layer(torch.randn(5, 2, 3))
    out.mul_(2)  # the states are saved for backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
