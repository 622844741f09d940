"""LSTMCell / GRUCell / RNNCell against torch.nn's cells, values and gradients in float64."""

from __future__ import annotations

import pytest
import torch
from conftest import F64, assert_close

import lstmkit

I, H, B = 3, 5, 4
CASES = [
    ("LSTMCell", {}),
    ("GRUCell", {}),
    ("RNNCell", {"nonlinearity": "tanh"}),
    ("RNNCell", {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("kind,extra", CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
def test_cell_matches_torch(kind, extra, bias, batched, with_hx):
    ref = getattr(torch.nn, kind)(I, H, bias=bias, **extra).to(F64)
    ours = getattr(lstmkit, kind)(I, H, bias=bias, **extra).to(F64)
    ours.load_state_dict(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    shape = (B,) if batched else ()
    x0 = torch.randn(*shape, I, dtype=F64)
    n_states = 2 if kind == "LSTMCell" else 1
    h0 = [torch.randn(*shape, H, dtype=F64) for _ in range(n_states)]
    outs = []
    for module in (ref, ours):
        x = x0.clone().requires_grad_(True)
        hs = [h.clone().requires_grad_(True) for h in h0]
        hx = (tuple(hs) if n_states == 2 else hs[0]) if with_hx else None
        out = module(x, hx)
        out = out if isinstance(out, tuple) else (out,)
        weights = [
            torch.randn(o.shape, dtype=F64, generator=torch.Generator().manual_seed(i))
            for i, o in enumerate(out)
        ]
        sum((o * w).sum() for o, w in zip(out, weights)).backward()
        outs.append(
            (
                out,
                x.grad,
                [h.grad for h in hs] if with_hx else [],
                {n: p.grad for n, p in module.named_parameters()},
            )
        )
    (o0, gx0, gh0, gp0), (o1, gx1, gh1, gp1) = outs
    for a, b in zip(o0, o1):
        assert_close(a, b, "cell output")
    assert_close(gx0, gx1, "input gradient")
    for a, b in zip(gh0, gh1):
        assert_close(a, b, "state gradient")
    for n in gp0:
        assert_close(gp0[n], gp1[n], f"gradient of {n}")


def test_lstm_cell_returns_gates_that_rebuild_the_state():
    cell = lstmkit.LSTMCell(I, H).to(F64)
    x, h, c = (torch.randn(B, n, dtype=F64) for n in (I, H, H))
    (h1, c1), gates = cell(x, (h, c), return_gates=True)
    assert set(gates) == set(lstmkit.LSTM_GATES)
    assert_close(c1, gates["f"] * c + gates["i"] * gates["g"], "c from gates")
    assert_close(h1, gates["o"] * torch.tanh(c1), "h from gates")


def test_cell_extras_run_and_reduce():
    ref = torch.nn.LSTMCell(I, H).to(F64)
    ours = lstmkit.LSTMCell(I, H, peephole=True).to(F64)
    with torch.no_grad():
        ours.weight_peep.zero_()
    ours.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(B, I, dtype=F64)
    for a, b in zip(ours(x), ref(x)):
        assert_close(a, b, "peephole cell with zero peepholes")


def test_cell_errors():
    cell = lstmkit.LSTMCell(I, H)
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        cell(torch.randn(2, B, I))
    with pytest.raises(RuntimeError, match="inconsistent input_size"):
        cell(torch.randn(B, I + 1))
    with pytest.raises(RuntimeError, match=r"Expected hx\[1\] size"):
        cell(torch.randn(B, I), (torch.randn(B, H), torch.randn(B, H + 1)))
    with pytest.raises(ValueError, match="dtype"):
        cell(torch.randn(B, I, dtype=F64))


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("coupled", [False, True])
@pytest.mark.parametrize("extras", ["plain", "layer_norm", "proj"])
def test_in_place_lstm_step_equals_the_equations(peephole, coupled, extras):
    """lstm_pointwise_ / lstm_output_ (the fused engine's in-place step) against lstm_pointwise /
    lstm_output (the equations the reference engine runs), to float64 rounding (addcmul_ may
    fuse the peephole's multiply-add)."""
    from lstmkit.cells.base import LayerParams
    from lstmkit.cells.lstm import lstm_output, lstm_output_, lstm_pointwise, lstm_pointwise_

    torch.manual_seed(0)
    B, H, G = 3, 5, 3 if coupled else 4
    pre, c_prev = torch.randn(B, G * H, dtype=F64), torch.randn(B, H, dtype=F64)
    peep = torch.randn((G - 1) * H, dtype=F64) if peephole else None
    p = LayerParams(w_ih=torch.empty(0), w_hh=torch.empty(0))
    if extras == "layer_norm":
        p.ln_c_w, p.ln_c_b = torch.rand(H, dtype=F64) + 0.5, torch.randn(H, dtype=F64)
    if extras == "proj":
        p.w_hr = torch.randn(2, H, dtype=F64)
    c, gates = lstm_pointwise(pre, c_prev, peep, coupled)
    h = lstm_output(c, gates["o"], p)
    act, c_out = pre.clone(), torch.empty(B, H, dtype=F64)
    blocks = lstm_pointwise_(act, c_prev, c_out, peep, coupled)
    h_out = lstm_output_(c_out, blocks["o"], p, torch.empty_like(h), torch.empty(B, H, dtype=F64))
    exact = {"atol": 1e-14, "rtol": 0.0}
    torch.testing.assert_close(c_out, c, **exact)
    torch.testing.assert_close(h_out, h, **exact)
    assert set(blocks) == set(gates) - ({"i"} if coupled else set())
    for name, value in blocks.items():
        torch.testing.assert_close(value, gates[name], **exact)


def _layer_norm_by_hand(x, gain=None, shift=None):
    """(x - mean) / sqrt(var + 1e-5) over the last dimension (biased variance), then gain, shift."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-5)
    y = y if gain is None else y * gain
    return y if shift is None else y + shift


def test_layer_norm_without_a_gain_normalises_the_last_dimension():
    """layer_norm(x, None): the width is x's last dimension (x is (2, 3, 5): not its 2nd or 2nd
    to last), with or without a shift."""
    from lstmkit.cells.base import layer_norm

    x, shift = torch.randn(2, 3, 5, dtype=F64), torch.randn(5, dtype=F64)
    exact = {"atol": 1e-12, "rtol": 0.0}
    torch.testing.assert_close(layer_norm(x, None), _layer_norm_by_hand(x), **exact)
    shifted = _layer_norm_by_hand(x, None, shift)
    torch.testing.assert_close(layer_norm(x, None, shift), shifted, **exact)


def test_layer_norm_width_is_a_constant_under_tracing():
    """With a gain, the normalised width is read from the gain, so a trace records it as a plain
    int (x.shape[-1] would be a traced size, which ONNX export with dynamic axes cannot take)."""
    import torch.fx
    import torch.nn.functional as F

    from lstmkit.cells.base import layer_norm

    gain = torch.rand(5, dtype=F64) + 0.5
    traced = torch.fx.symbolic_trace(lambda x: layer_norm(x, gain))
    calls = [n for n in traced.graph.nodes if n.op == "call_function"]
    assert [n.target for n in calls] == [F.layer_norm], traced.graph
    assert calls[0].args[1] == (5,) and type(calls[0].args[1][0]) is int, traced.graph
    x = torch.randn(4, 5, dtype=F64)
    torch.testing.assert_close(traced(x), _layer_norm_by_hand(x, gain), atol=1e-12, rtol=0.0)


@pytest.mark.parametrize("lead", [(3,), (), (2, 3)], ids=["batch", "unbatched", "time-batch"])
def test_lstm_pointwise_defaults_are_the_plain_lstm_for_any_leading_shape(lead):
    """lstm_pointwise / lstm_pointwise_ called with their defaults (no peepholes, not coupled)
    compute torch.nn.LSTM's step, on (..., 4H) blocks of any leading shape (H=5 differs from
    every leading size)."""
    from lstmkit.cells.lstm import lstm_pointwise, lstm_pointwise_

    H = 5
    pre, c_prev = torch.randn(*lead, 4 * H, dtype=F64), torch.randn(*lead, H, dtype=F64)
    i, f, o = (torch.sigmoid(pre[..., k * H : (k + 1) * H]) for k in (0, 1, 3))
    g = torch.tanh(pre[..., 2 * H : 3 * H])
    c = f * c_prev + i * g
    want = {"i": i, "f": f, "g": g, "o": o}
    exact = {"atol": 1e-14, "rtol": 0.0}

    c_new, gates = lstm_pointwise(pre, c_prev)
    torch.testing.assert_close(c_new, c, **exact)
    assert set(gates) == set(want)
    for name in want:
        torch.testing.assert_close(gates[name], want[name], **exact)

    act, c_out = pre.clone(), torch.empty(*lead, H, dtype=F64)
    blocks = lstm_pointwise_(act, c_prev, c_out)
    torch.testing.assert_close(c_out, c, **exact)
    assert set(blocks) == set(want)
    for name in want:
        torch.testing.assert_close(blocks[name], want[name], **exact)
    torch.testing.assert_close(act, torch.cat([i, f, g, o], -1), **exact)


def test_rnn_pointwise_defaults_to_tanh():
    from lstmkit.cells.rnn import rnn_pointwise

    xp, hp = torch.randn(3, 5, dtype=F64), torch.randn(3, 5, dtype=F64)
    torch.testing.assert_close(rnn_pointwise(xp, hp), torch.tanh(xp + hp), atol=0.0, rtol=0.0)


def test_torch_modes_name_only_the_cells_torch_computes():
    """A coupled (CIFG) LSTM has no torch kernel: torch_mode is None for it."""
    from lstmkit.cells import GRU, LSTM, RNN, CellOptions

    assert LSTM.torch_mode(CellOptions()) == "LSTM"
    assert LSTM.torch_mode(CellOptions(coupled=True)) is None
    assert GRU.torch_mode(CellOptions()) == "GRU"
    assert RNN.torch_mode(CellOptions()) == "RNN_TANH"
    assert RNN.torch_mode(CellOptions(nonlinearity="relu")) == "RNN_RELU"


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_masks_take_the_dtype_and_device_of_like(device):
    """dropout_mask (both branches: p = 1 and p < 1) and bernoulli_mask build their masks with
    like's dtype and device (float64 and "meta" differ from the defaults)."""
    from lstmkit.cells.regularizers import bernoulli_mask, dropout_mask

    like = torch.empty(0, dtype=F64, device=device)
    masks = [dropout_mask((2, 3), 1.0, like), dropout_mask((2, 3), 0.5, like)]
    masks.append(bernoulli_mask((2, 3), 0.5, like))
    for mask in masks:
        assert mask.shape == (2, 3)
        assert mask.dtype == F64 and mask.device == torch.device(device)
    if device == "cpu":
        assert torch.equal(masks[0], torch.zeros(2, 3, dtype=F64))  # p = 1 drops everything


def test_zoneout_expectation_at_the_rate_extremes():
    """Without a mask (evaluation) zoneout is rate * prev + (1 - rate) * new: rate 1 keeps prev,
    rate 0 is new itself (a non-finite prev does not leak in as 0 * inf)."""
    from lstmkit.cells.regularizers import zoneout

    prev, new = torch.randn(3, 5, dtype=F64), torch.randn(3, 5, dtype=F64)
    torch.testing.assert_close(zoneout(prev, new, None, 1.0), prev, atol=0.0, rtol=0.0)
    torch.testing.assert_close(
        zoneout(prev, new, None, 0.25), 0.25 * prev + 0.75 * new, atol=1e-15, rtol=0.0
    )
    prev[0, 0], prev[1, 1] = float("inf"), float("nan")
    torch.testing.assert_close(zoneout(prev, new, None, 0.0), new, atol=0.0, rtol=0.0)
