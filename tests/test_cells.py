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
    from lstmkit.cells import GRU_CELL as GRU
    from lstmkit.cells import LSTM_CELL as LSTM
    from lstmkit.cells import RNN_CELL as RNN
    from lstmkit.cells import CellOptions

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


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_defaults_and_attributes_are_torch_s(kind):
    """Built with defaults, a cell has torch's parameters (biases included), repr and bias /
    nonlinearity attributes; with bias=False, bias_ih and bias_hh are registered as None, as in
    torch, so `cell.bias_ih is None` and the parameter table lists the same names."""
    ref, ours = getattr(torch.nn, kind)(I, H), getattr(lstmkit, kind)(I, H)
    names = [n for n, _ in ours.named_parameters()]
    assert names == [n for n, _ in ref.named_parameters()]
    assert names == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert repr(ours) == repr(ref) == f"{kind}({I}, {H})"
    assert ours.bias is ref.bias is True
    if kind == "RNNCell":
        assert ours.nonlinearity == ref.nonlinearity == "tanh"
    ref, ours = getattr(torch.nn, kind)(I, H, bias=False), getattr(lstmkit, kind)(I, H, bias=False)
    assert repr(ours) == repr(ref) == f"{kind}({I}, {H}, bias=False)"
    assert ours.bias is ref.bias is False
    assert list(ours._parameters) == list(ref._parameters)
    for name in ("bias_ih", "bias_hh"):
        assert hasattr(ours, name) and getattr(ours, name) is None, name
    assert [n for n, _ in ours.named_parameters()] == ["weight_ih", "weight_hh"]


def test_cell_base_defaults_for_a_class_that_only_names_its_cell():
    """A CellBase subclass that sets only `cell` (how a registered custom cell gets a one-step
    module) gets torch's defaults: biases, no layer norm; it then computes torch's step."""
    from lstmkit.cells import GRU_CELL, LSTM_CELL
    from lstmkit.nn.cells import CellBase

    for cell, ref_kind in ((GRU_CELL, "GRUCell"), (LSTM_CELL, "LSTMCell")):
        module = type("Plain" + ref_kind, (CellBase,), {"cell": cell})(I, H).to(F64)
        ref = getattr(torch.nn, ref_kind)(I, H).to(F64)
        assert [n for n, _ in module.named_parameters()] == [n for n, _ in ref.named_parameters()]
        module.load_state_dict(ref.state_dict())
        x = torch.randn(B, I, dtype=F64)
        ours, theirs = module(x), ref(x)
        ours, theirs = (ours, theirs) if isinstance(theirs, tuple) else ((ours,), (theirs,))
        for a, b in zip(ours, theirs, strict=True):
            assert_close(a, b, f"{ref_kind} from CellBase")


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_device_and_dtype_reach_every_parameter_and_the_zero_state(kind):
    """device= and dtype= place every parameter ("meta" and float64 differ from the defaults),
    and the zero state made when hx is None follows the input onto that device."""
    n_states = 2 if kind == "LSTMCell" else 1
    cls = getattr(lstmkit, kind)
    meta = cls(I, H, device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert {p.dtype for p in meta.parameters()} == {torch.float32}
    out = meta(torch.empty(B, I, device="meta"))
    out = out if n_states == 2 else (out,)
    assert [(o.device.type, tuple(o.shape)) for o in out] == [("meta", (B, H))] * n_states
    wide = cls(I, H, dtype=F64)
    assert {p.dtype for p in wide.parameters()} == {F64}
    assert {p.device.type for p in wide.parameters()} == {"cpu"}
    both = cls(I, H, device="meta", dtype=F64)
    assert {(p.device.type, p.dtype) for p in both.parameters()} == {("meta", F64)}


def _ln_params(module):
    """Random layer-norm gains and shifts (torch's init, 1 and 0, would hide a missing one)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("ln_"):
                p.copy_(torch.randn_like(p) if "bias" in name else torch.rand_like(p) + 0.5)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_layer_norm_is_the_hand_formula(kind):
    """layer_norm=True on a cell: the ln_* parameters exist (named as on the layers) and the step
    is xp = LN(W_ih x) g_ih + b_ih, hp = LN(W_hh h) g_hh + b_hh, then the cell's equations (the
    LSTM's cell normalised before its tanh), by hand."""
    cell = getattr(lstmkit, kind)(I, H, layer_norm=True).to(F64)
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "ln_weight_ih", "ln_weight_hh"]
    if kind == "LSTMCell":
        names += ["ln_weight_c", "ln_bias_c"]
    assert [n for n, _ in cell.named_parameters()] == names
    _ln_params(cell)
    x, h, c = (torch.randn(B, n, dtype=F64) for n in (I, H, H))
    xp = _layer_norm_by_hand(x @ cell.weight_ih.T, cell.ln_weight_ih) + cell.bias_ih
    hp = _layer_norm_by_hand(h @ cell.weight_hh.T, cell.ln_weight_hh) + cell.bias_hh
    with torch.no_grad():
        if kind == "LSTMCell":
            i, f, g, o = (xp + hp).chunk(4, -1)
            c1 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            ln_c = _layer_norm_by_hand(c1, cell.ln_weight_c, cell.ln_bias_c)
            want = (torch.sigmoid(o) * torch.tanh(ln_c), c1)
            got = cell(x, (h, c))
        elif kind == "GRUCell":
            (xr, xz, xn), (hr, hz, hn) = xp.chunk(3, -1), hp.chunk(3, -1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            want, got = ((1 - z) * n + z * h,), (cell(x, h),)
        else:
            want, got = (torch.tanh(xp + hp),), (cell(x, h),)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, f"{kind} with layer_norm")


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_output_structure_and_unbatched_gates(kind):
    """A one-state cell returns a Tensor (not a 1-tuple), an LSTMCell a pair, as torch; with
    return_gates=True an unbatched input gives a dict of (H,) gates, here checked against the
    gate equations by hand (H=5 differs from the batch of one that is squeezed away)."""
    ref = getattr(torch.nn, kind)(I, H).to(F64)
    cell = getattr(lstmkit, kind)(I, H).to(F64)
    cell.load_state_dict(ref.state_dict())
    x, h, c = torch.randn(I, dtype=F64), torch.randn(H, dtype=F64), torch.randn(H, dtype=F64)
    hx = (h, c) if kind == "LSTMCell" else h
    with torch.no_grad():
        out, gates = cell(x, hx, return_gates=True)
        plain = cell(x, hx)
        expected = ref(x, hx)
        xp = ref.weight_ih @ x + ref.bias_ih
        hp = ref.weight_hh @ h + ref.bias_hh
    assert type(plain) is type(out) is type(expected)
    if kind == "LSTMCell":
        assert type(out) is tuple and len(out) == 2
        i, f, g, o = (xp + hp).chunk(4)
        want = {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "g": torch.tanh(g)}
        want["o"] = torch.sigmoid(o)
    else:
        assert type(out) is torch.Tensor
        out, plain, expected = (out,), (plain,), (expected,)
        want = {}
        if kind == "GRUCell":
            (xr, xz, xn), (hr, hz, hn) = xp.chunk(3), hp.chunk(3)
            r = torch.sigmoid(xr + hr)
            want = {"r": r, "z": torch.sigmoid(xz + hz), "n": torch.tanh(xn + r * hn)}
    for a, b, e in zip(out, plain, expected, strict=True):
        assert_close(a, e, f"{kind} unbatched output")
        assert_close(b, e, f"{kind} unbatched output without gates")
    assert isinstance(gates, dict) and set(gates) == set(want)
    for name, value in want.items():
        assert_close(gates[name], value, f"unbatched gate {name}")


def test_cell_repr_is_torch_s():
    for kw in ({}, {"bias": False}, {"nonlinearity": "relu"}):
        assert repr(lstmkit.RNNCell(3, 5, **kw)) == repr(torch.nn.RNNCell(3, 5, **kw))


def test_the_old_names_of_the_cell_objects_still_resolve_with_a_warning():
    import lstmkit.cells as cells

    with pytest.warns(
        DeprecationWarning, match="lstmkit.cells.LSTM is now lstmkit.cells.LSTM_CELL"
    ):
        assert cells.LSTM is cells.LSTM_CELL
    with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
        cells.NOPE  # noqa: B018
