"""Gate traces: shapes, layouts, and values checked against torch's own computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import F64, assert_close, twins
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

T, B, I, H = 5, 3, 3, 4
LENGTHS = torch.tensor([5, 2, 4])


def test_lstm_trace_values_match_torch_cells():
    """Rebuild every gate of layer 0 with torch.nn.LSTMCell's weights and compare."""
    ref, ours = twins("LSTM", I, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=F64)
    out, (h_n, c_n), tr = ours(x, return_trace=True)
    assert tr.gates["f"].shape == (2, 2, T, B, H) and tr.cell.shape == (2, 2, T, B, H)
    assert_close(out, ref(x)[0], "output unchanged by tracing")
    w_ih, w_hh = ref.weight_ih_l0, ref.weight_hh_l0
    b = ref.bias_ih_l0 + ref.bias_hh_l0
    h = c = torch.zeros(B, H, dtype=F64)
    for t in range(T):
        i, f, g, o = (x[t] @ w_ih.T + h @ w_hh.T + b).chunk(4, -1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        for name, v in zip("ifgo", (i, f, g, o)):
            assert_close(tr.gates[name][0, 0, t], v, f"gate {name} at step {t}")
        assert_close(tr.cell[0, 0, t], c, f"cell at step {t}")
    # the last layer's hidden states are the output; final states are the last (first) steps
    assert_close(torch.cat([tr.hidden[1, 0], tr.hidden[1, 1]], -1), out, "trace h vs output")
    assert_close(tr.cell[1, 0, -1], c_n[2], "forward c_n")
    assert_close(tr.cell[1, 1, 0], c_n[3], "reverse c_n is at t = 0")


@pytest.mark.parametrize("kind,gates", [("LSTM", "ifgo"), ("GRU", "rzn"), ("RNN", "")])
def test_trace_layouts(kind, gates):
    m = getattr(lstmkit, kind)(I, H, num_layers=2, batch_first=True).to(F64)
    x = torch.randn(B, T, I, dtype=F64)
    out, _, tr = m(x, return_trace=True)
    assert tr.gate_names == tuple(gates) and tr.batch_first
    assert tr.hidden.shape == (2, 1, B, T, H)
    assert_close(tr.hidden[-1, 0], out, "batch_first hidden == output")
    assert (tr.cell is not None) == (kind == "LSTM")
    out1, _, tr1 = m(x[0], return_trace=True)  # unbatched
    assert tr1.hidden.shape == (2, 1, T, H) and not tr1.batched
    assert_close(tr1.hidden[-1, 0], out1, "unbatched hidden == output")
    with pytest.raises(KeyError, match="gates are"):
        tr.gate("nope")


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_trace_with_lengths_and_packing(kind):
    m = getattr(lstmkit, kind)(I, H, bidirectional=True).to(F64)
    x = torch.randn(T, B, I, dtype=F64)
    out, h_n, tr = m(x, lengths=LENGTHS, return_trace=True)
    h_n = h_n[0] if kind == "LSTM" else h_n
    for b, n in enumerate(LENGTHS.tolist()):
        assert torch.all(tr.hidden[0, :, n:, b] == 0), "zeros past the length"
        assert torch.all(tr.gates[tr.gate_names[0]][0, :, n:, b] == 0)
        assert_close(tr.hidden[0, 0, n - 1, b], h_n[0, b], "forward final state at length")
        assert_close(tr.hidden[0, 1, 0, b], h_n[1, b], "reverse final state at t=0")
    assert torch.equal(tr.lengths, LENGTHS)
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    _, _, tr_p = m(packed, return_trace=True)
    assert_close(tr_p.hidden, tr.hidden, "packed trace == lengths trace (caller's batch order)")


def test_trace_carries_gradients_and_detaches():
    m = lstmkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    _, _, tr = m(x, return_trace=True)
    tr.gates["f"].mean().backward()  # e.g. a penalty on the forget gate
    assert m.weight_hh_l0.grad is not None and m.weight_hh_l0.grad.abs().sum() > 0
    assert not tr.detach().gates["f"].requires_grad
    arrays = tr.numpy()
    assert arrays["gate_f"].shape == (1, 1, T, B, H) and arrays["cell"].shape == (1, 1, T, B, H)


def test_trace_with_extras_and_projection():
    m = lstmkit.LSTM(I, H, proj_size=2, peephole=True, layer_norm=True, zoneout=0.2).eval()
    _, (h, c), tr = m(torch.randn(T, B, I), return_trace=True)
    assert tr.hidden.shape == (1, 1, T, B, 2) and tr.cell.shape == (1, 1, T, B, H)
    assert_close(tr.cell[0, 0, -1], c[0], "c_n", atol=1e-6)
    m = lstmkit.LSTM(I, H, coupled=True)
    _, _, tr = m(torch.randn(T, B, I), return_trace=True)
    assert_close(tr.gates["i"], 1 - tr.gates["f"], "coupled: i = 1 - f", atol=1e-6)


def test_trace_gate_defaults_to_the_last_layer_and_the_forward_direction():
    """gate(name) with no layer or direction: the forward direction of the last layer, checked
    against gates rebuilt by hand from torch.nn.LSTM's weights (a bidirectional layer, so the
    reverse direction is there to be picked by mistake)."""
    ref, ours = twins("LSTM", I, H, bidirectional=True)
    x = torch.randn(T, B, I, dtype=F64)
    _, _, tr = ours(x, return_trace=True)
    w_ih, w_hh, b = ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0 + ref.bias_hh_l0
    h = c = torch.zeros(B, H, dtype=F64)
    want = {name: [] for name in "ifgo"}
    for t in range(T):
        i, f, g, o = (x[t] @ w_ih.T + h @ w_hh.T + b).chunk(4, -1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        for name, v in zip("ifgo", (i, f, g, o)):
            want[name].append(v)
    for name in "ifgo":
        assert_close(tr.gate(name), torch.stack(want[name]), f"gate({name!r})")


def _hand_trace() -> lstmkit.Trace:
    """A Trace with every field away from its default (L = D = 1, B = 2, T = 3, H = 2)."""
    ramp = torch.arange(12, dtype=torch.float32).reshape(1, 1, 2, 3, 2)
    return lstmkit.Trace(
        mode="LSTM",
        gate_names=("i", "f"),
        gates={"i": ramp, "f": ramp + 100},
        hidden=ramp + 200,
        cell=ramp + 300,
        batch_first=True,
        batched=False,
        lengths=torch.tensor([3, 1]),
        meta={"engine": "hand"},
    )


@pytest.mark.parametrize("how", ["detach", "to", "map"])
def test_trace_map_detach_and_to_keep_every_field(how):
    tr = _hand_trace()
    new = {
        "detach": lambda: tr.detach(),
        "to": lambda: tr.to(torch.float64),
        "map": lambda: tr.map(lambda t: t * 2),
    }[how]()
    scale = 2 if how == "map" else 1
    assert (new.mode, new.gate_names, new.batch_first, new.batched) == (
        "LSTM",
        ("i", "f"),
        True,
        False,
    )
    assert new.lengths is not None and new.lengths.tolist() == [3, 1]
    assert new.meta == {"engine": "hand"} and new.meta is not tr.meta  # a copy
    ramp = torch.arange(12, dtype=torch.float64).reshape(1, 1, 2, 3, 2)
    for got, offset in ((new.gates["i"], 0), (new.gates["f"], 100), (new.hidden, 200)):
        assert torch.equal(got.double(), (ramp + offset) * scale)
    assert torch.equal(new.cell.double(), (ramp + 300) * scale)
    assert new.hidden.dtype == (torch.float64 if how == "to" else torch.float32)


def test_trace_numpy_keys_and_values():
    arrays = _hand_trace().numpy()
    assert sorted(arrays) == ["cell", "gate_f", "gate_i", "hidden"]
    ramp = np.arange(12, dtype=np.float32).reshape(1, 1, 2, 3, 2)
    for key, offset in (("gate_i", 0), ("gate_f", 100), ("hidden", 200), ("cell", 300)):
        assert isinstance(arrays[key], np.ndarray)
        np.testing.assert_array_equal(arrays[key], ramp + offset)
