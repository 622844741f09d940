"""Behaviour pinned down by the surviving mutants of the core (docs/mutation-report.md):
input checking and canonical form (lstmkit.nn.inputs), the layer classes (lstmkit.nn.base,
lstmkit.nn.layers), the engine contract's traces (lstmkit.engines.base) and the fused engine's
loops (lstmkit.engines.fused*).

Expected values come from torch.nn (same weights, float64), torch's own packing, hand-written
loops, or the reference engine when the fused engine is under test; never from the code tested.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from fused_helpers import make_call, one_thread  # noqa: F401
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit import engines
from lstmkit.cells import Cell, CellOptions, LayerParams, register_cell, registry
from lstmkit.cells.gates import split
from lstmkit.cells.gru import GRU_CELL
from lstmkit.cells.lstm import LSTM_CELL
from lstmkit.cells.regularizers import StepMasks
from lstmkit.engines import cpu_loops, fused_gru, fused_lstm
from lstmkit.engines.base import DirectionCall
from lstmkit.engines.fused_ops import direction_config
from lstmkit.nn import layers

F64 = torch.float64
ATOL = 1e-10


def twins(kind: str, *args, engine: str = "auto", **kwargs):
    """(torch.nn module, lstmkit module) with identical float64 weights."""
    ref = getattr(torch.nn, kind)(*args, **kwargs).to(F64)
    ours = getattr(lstmkit, kind)(*args, engine=engine, **kwargs).to(F64)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def close(got: Tensor, want: Tensor, what: str, atol: float = ATOL) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=lambda m: f"{what}: {m}")


def states(hx) -> tuple[Tensor, ...]:
    return tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)


def weighted_sum(tensors, seed: int = 7) -> Tensor:
    """sum_k <t_k, r_k> with fixed random r_k (a plain sum would hide sign errors)."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=F64)
    for t in tensors:
        total = total + (t * torch.randn(t.shape, generator=gen, dtype=F64)).sum()
    return total


def grads_of(loss: Tensor, module, leaves: list[Tensor]) -> list[Tensor | None]:
    params = [p for _, p in sorted(module.named_parameters())]
    return list(torch.autograd.grad(loss, [*leaves, *params], allow_unused=True))


def assert_grads(got: list, want: list, what: str) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), f"{what}: gradient {k} present in one run only"
        if b is not None:
            close(a, b, f"{what}: gradient {k}")


# ---- lengths= ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lengths",
    [torch.tensor([True, True]), torch.tensor([2, 1], dtype=torch.complex64)],
    ids=["bool", "complex"],
)
def test_lengths_that_are_not_integers_are_refused(lengths) -> None:
    """lengths= of dtype bool or complex is refused with a ValueError (not read as 0 / 1)."""
    layer = lstmkit.GRU(3, 4)
    with pytest.raises(ValueError, match="must hold integers"):
        layer(torch.randn(3, 2, 3), lengths=lengths)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_lengths_of_any_width_become_int64(dtype) -> None:
    """Narrow integer lengths are canonicalised to int64 on CPU (the trace's lengths say so) and
    give torch.nn's packed result."""
    T, B, I, H = 4, 3, 3, 5
    ref, ours = twins("GRU", I, H)
    x = torch.randn(T, B, I, dtype=F64)
    lengths = torch.tensor([4, 1, 3], dtype=dtype)
    out, h_n, trace = ours(x, lengths=lengths, return_trace=True)
    assert trace.lengths.dtype == torch.int64 and trace.lengths.device.type == "cpu"
    assert trace.lengths.tolist() == [4, 1, 3]
    packed = pack_padded_sequence(x, lengths.long(), enforce_sorted=False)
    want_out, want_h = ref(packed)
    close(out, pad_packed_sequence(want_out, total_length=T)[0], "output")
    close(h_n, want_h, "h_n")


# ---- PackedSequence checks ---------------------------------------------------------------------
def _raw_packed(data, batch_sizes, sorted_indices=None, unsorted_indices=None) -> PackedSequence:
    """A PackedSequence as a caller could build it by hand: no checks, no inverse computed."""
    return PackedSequence._make((data, batch_sizes, sorted_indices, unsorted_indices))


@pytest.mark.parametrize(
    "batch_sizes",
    [[2, 1], torch.tensor([[2, 1]]), torch.tensor([1, 2])],
    ids=["list", "2-D", "increasing"],
)
def test_malformed_batch_sizes_are_a_value_error(batch_sizes) -> None:
    """batch_sizes that are not a non-increasing 1-D int64 tensor raise ValueError before any
    unpacking (a list, a 2-D tensor, sizes that grow)."""
    layer = lstmkit.LSTM(3, 4)
    packed = _raw_packed(torch.randn(3, 3), batch_sizes)
    with pytest.raises(ValueError, match="PackedSequence batch_sizes must be"):
        layer(packed)


@pytest.mark.parametrize(
    "indices",
    [
        torch.tensor([1.0, 0.0]),  # a permutation's values, as floats
        [1, 0],  # not a tensor
        torch.tensor(0),  # 0-D
    ],
    ids=["float", "list", "0-D"],
)
def test_sorted_indices_must_be_an_integer_permutation_tensor(indices) -> None:
    """sorted_indices that are floats, a list, or 0-D raise ValueError (never TypeError /
    AttributeError, never accepted because their values look like a permutation)."""
    layer = lstmkit.LSTM(3, 4)
    if isinstance(indices, Tensor) and indices.dim() == 0:  # one sequence: B = 1
        packed = _raw_packed(torch.randn(2, 3), torch.tensor([1, 1]), indices)
    else:
        packed = _raw_packed(torch.randn(3, 3), torch.tensor([2, 1]), indices)
    with pytest.raises(ValueError, match="sorted_indices must be a permutation"):
        layer(packed)


def test_packed_output_keeps_the_callers_indices_like_torch() -> None:
    """A PackedSequence with only unsorted_indices (sorted None) comes back with exactly the
    input's indices, as torch.nn.LSTM returns them."""
    I, H = 3, 4
    ref, ours = twins("LSTM", I, H)
    data = torch.randn(5, I, dtype=F64)  # two sequences of lengths 3 and 2
    packed = PackedSequence(data, torch.tensor([2, 2, 1]), None, torch.tensor([0, 1]))
    want, _ = ref(packed)
    got, _ = ours(packed)
    assert want.sorted_indices is None and got.sorted_indices is None
    assert got.unsorted_indices is not None
    assert torch.equal(got.unsorted_indices, want.unsorted_indices)
    assert torch.equal(got.batch_sizes, want.batch_sizes)
    close(got.data, want.data, "packed data")


# ---- traces: layout of unbatched input, what a trace says ------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_trace_drops_only_the_batch_axis(batch_first: bool) -> None:
    """Unbatched input gives (L, D, T, H) trace tensors equal to torch.nn's per-step output,
    batched=False; batched input says batched=True."""
    T, I, H = 3, 2, 4
    ref, ours = twins("LSTM", I, H, batch_first=batch_first)
    x = torch.randn(T, I, dtype=F64)
    _, _, trace = ours(x, return_trace=True)
    assert trace.batched is False
    assert trace.hidden.shape == (1, 1, T, H)
    assert trace.cell.shape == (1, 1, T, H)
    assert all(trace.gates[g].shape == (1, 1, T, H) for g in trace.gate_names)
    close(trace.hidden[0, 0], ref(x)[0], "trace hidden vs torch output")
    xb = x.unsqueeze(0 if batch_first else 1)
    assert ours(xb, return_trace=True)[2].batched is True


class _OptionGatedCell(Cell):
    """A JANET-like cell whose traced gates depend on the options (as the contract allows)."""

    name = "OPTGATED"
    state_names = ("h",)

    def layout(self, opts: CellOptions) -> tuple[str, ...]:
        return ("f", "g")

    def trace_gates(self, opts: CellOptions) -> tuple[str, ...]:
        return ("f",) if opts.coupled else ("f", "g")

    def step(self, xp, hp, state, p: LayerParams, opts: CellOptions):
        pre = split(xp + hp, ("f", "g"))
        f, g = torch.sigmoid(pre["f"]), torch.tanh(pre["g"])
        return (f * state[0] + (1 - f) * g,), {"f": f, "g": g}


@pytest.fixture
def option_gated():
    cell = register_cell(_OptionGatedCell())
    yield cell
    registry.CELLS.pop("optgated", None)
    layers.LAYERS.pop("optgated", None)


def test_trace_of_a_registered_cell_reads_its_gates_with_the_layers_options(option_gated) -> None:
    """A registered cell's trace names the gates trace_gates(opts) gives, with values of the
    hand-written equations; its layer class is documented."""
    cls = lstmkit.nn.layer_class("optgated")
    assert cls.__doc__ and "OPTGATED" in cls.__doc__
    layer = cls(3, 4, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    out, _, trace = layer(x, return_trace=True)
    assert trace.mode == "OPTGATED" and trace.gate_names == ("f", "g")
    h, fs = torch.zeros(2, 4, dtype=F64), []
    for t in range(5):
        pre = x[t] @ layer.weight_ih_l0.T + layer.bias_ih_l0 + h @ layer.weight_hh_l0.T
        pre = pre + layer.bias_hh_l0
        f, g = torch.sigmoid(pre[:, :4]), torch.tanh(pre[:, 4:])
        h = f * h + (1 - f) * g
        fs.append(f)
    close(trace.gates["f"][0, 0], torch.stack(fs), "gate f")
    close(trace.hidden[0, 0], out, "trace hidden")


@pytest.mark.parametrize("engine", ["reference", "fused"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_an_engines_own_trace_names_its_cell_and_lengths(engine: str, kind: str) -> None:
    """The Trace an engine returns (RecurrentResult.trace, canonical layout) carries the cell's
    name as mode and the call's lengths; so does the layer's."""
    layer = getattr(lstmkit, kind)(3, 4, num_layers=2, bidirectional=True, dtype=F64)
    x = torch.randn(4, 3, 3, dtype=F64)
    lengths = torch.tensor([4, 2, 3])
    call = make_call(layer, x, None, lengths, return_trace=True)
    result = engines.ENGINES[engine].run(call)
    assert result.trace.mode == kind
    assert result.trace.lengths is not None and torch.equal(result.trace.lengths, lengths)
    assert result.trace.hidden.shape == (2, 2, 4, 3, 4)
    layer.engine = engine
    trace = layer(x, lengths=lengths, return_trace=True)[2]
    assert trace.mode == kind and torch.equal(trace.lengths, lengths)


@pytest.mark.parametrize("engine", ["reference", "fused"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_run_direction_without_a_trace_records_nothing(engine: str, kind: str) -> None:
    """Engine.run_direction (the engine contract) returns torch.nn's output and final state for
    one layer-direction and, without return_trace, an empty record dict."""
    ref, ours = twins(kind, 3, 4)
    x = torch.randn(5, 2, 3, dtype=F64)
    call = make_call(ours, x, None, None, return_trace=False)
    d = DirectionCall(
        x=x, state=tuple(s[0] for s in call.hx), params=call.params[0], layer=0, reverse=False,
        valid=None,
    )  # fmt: skip
    result = engines.ENGINES[engine].run_direction(call, d)
    assert result.record == {} and isinstance(result.record, dict)
    want, want_h = ref(x)
    close(result.output, want, "output")
    close(result.state[0], states(want_h)[0][0], "final h")


# ---- the layer classes --------------------------------------------------------------------------
def test_a_layer_pickled_without_its_spec_rebuilds_it() -> None:
    """A layer pickled before RecurrentSpec existed (no `spec` in its __dict__) unpickles into a
    working layer that computes torch.nn's result."""
    ref, ours = twins("LSTM", 3, 4, num_layers=2)
    del ours.__dict__["spec"]  # what an old pickle holds
    restored = pickle.loads(pickle.dumps(ours))
    x = torch.randn(5, 2, 3, dtype=F64)
    out, (h, c) = restored(x)
    want, (wh, wc) = ref(x)
    close(out, want, "output")
    close(h, wh, "h_n")
    close(c, wc, "c_n")
    close(copy.deepcopy(restored)(x)[0], want, "deep copy output")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_repr_of_a_default_layer_is_torchs(kind: str) -> None:
    """repr() lists only what differs from the defaults: a default layer reads as torch.nn's,
    and every extra appears exactly when set."""
    assert repr(getattr(lstmkit, kind)(3, 4)) == repr(getattr(torch.nn, kind)(3, 4))
    full = dict(num_layers=2, bias=False, batch_first=True, dropout=0.5, bidirectional=True)
    if kind == "LSTM":
        full["proj_size"] = 2
    assert repr(getattr(lstmkit, kind)(3, 4, **full)) == repr(getattr(torch.nn, kind)(3, 4, **full))
    extras = dict(recurrent_dropout=0.2, weight_drop=0.1, engine="reference")
    if kind == "LSTM":
        extras |= dict(coupled=True, layer_norm=True, zoneout=(0.1, 0.2))
    text = repr(getattr(lstmkit, kind)(3, 4, **extras))
    for key, value in extras.items():
        assert f"{key}={value!r}" in text, (key, text)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_factory_device_and_dtype_reach_every_parameter(kind: str) -> None:
    """device= and dtype= place every parameter as torch.nn's constructor does (the meta
    device stands in for a GPU: no memory, no kernels)."""
    ours = getattr(lstmkit, kind)(3, 4, 2, device="meta", dtype=F64)
    ref = getattr(torch.nn, kind)(3, 4, 2, device="meta", dtype=F64)
    want = {n: (p.device.type, p.dtype, p.shape) for n, p in ref.named_parameters()}
    got = {n: (p.device.type, p.dtype, p.shape) for n, p in ours.named_parameters()}
    assert got == want


EXTRAS = [
    ("GRU", "recurrent_dropout", 0.5, True),
    ("GRU", "weight_drop", 0.5, True),
    ("GRU", "zoneout", 0.4, False),
    ("GRU", "layer_norm", True, False),
    ("RNN", "recurrent_dropout", 0.5, True),
    ("RNN", "weight_drop", 0.5, True),
    ("RNN", "zoneout", 0.4, False),
    ("RNN", "layer_norm", True, False),
]


@pytest.mark.parametrize("kind,option,value,training", EXTRAS)
def test_gru_and_rnn_pass_each_extra_option_on(kind, option, value, training) -> None:
    """GRU(...) and RNN(...) keep each extra option they are given (attribute and repr), and it
    changes the result against the same weights without it."""
    cls = getattr(lstmkit, kind)
    plain = cls(3, 4, dtype=F64, engine="reference")
    layer = cls(3, 4, dtype=F64, engine="reference", **{option: value})
    shown = getattr(layer, option)
    assert (shown.hidden == value) if option == "zoneout" else (shown == value)
    assert f"{option}=" in repr(layer)
    missing, unexpected = layer.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("ln_") for k in missing), missing
    plain.train(training)
    layer.train(training)
    x = torch.randn(6, 2, 3, dtype=F64)
    torch.manual_seed(0)
    out_plain = plain(x)[0]
    torch.manual_seed(0)
    out = layer(x)[0]
    assert (out - out_plain).abs().max() > 1e-3


# ---- the fused engine ---------------------------------------------------------------------------
def _ours_vs_torch(kind, T, B, lengths=None, hx=True, **kwargs):
    """(ours, want) forward + backward of the fused engine and of torch.nn on the same weights:
    outputs, final states and the gradients of input, h0 and parameters under one loss.
    `lengths`: ours takes lengths= on the padded batch, torch a pack_padded_sequence of it,
    padded back with total_length=T."""
    I, H = 3, 4
    ref, ours = twins(kind, I, H, engine="fused", **kwargs)
    x0 = torch.randn(T, B, I, dtype=F64)
    L = ref.num_layers * (2 if ref.bidirectional else 1)
    n_states = 2 if kind == "LSTM" else 1
    h00 = tuple(torch.randn(L, B, H, dtype=F64) for _ in range(n_states)) if hx else ()

    def go(module, is_ours):
        x = x0.clone().requires_grad_(True)
        h0 = tuple(h.clone().requires_grad_(True) for h in h00)
        arg = None if not h0 else (h0 if n_states > 1 else h0[0])
        if lengths is None:
            out, hn = module(x, arg)
        elif is_ours:
            out, hn = module(x, arg, lengths=lengths)
        else:
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, hn = module(packed, arg)
            out = pad_packed_sequence(out, total_length=T)[0]
        tensors = [out, *states(hn)]
        return [t.detach() for t in tensors], grads_of(weighted_sum(tensors), module, [x, *h0])

    got, want = go(ours, True), go(ref, False)
    assert ours.last_engine == "fused"
    return got, want


def _assert_twin_runs(got, want, what: str) -> None:
    for k, (a, b) in enumerate(zip(got[0], want[0])):
        close(a, b, f"{what}: forward tensor {k}")
    assert_grads(got[1], want[1], what)


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_rnn_matches_torch_from_a_single_step(T: int, nonlinearity: str, bias: bool) -> None:
    """The fused RNN (its per-step buffer) computes torch.nn.RNN's result and gradients for any
    sequence length, one step included."""
    got, want = _ours_vs_torch("RNN", T, 2, nonlinearity=nonlinearity, bias=bias)
    _assert_twin_runs(got, want, f"RNN T={T}")


KINDS_AND_LOOPS = [("LSTM", "compiled"), ("LSTM", "python"), ("GRU", "python"), ("RNN", "python")]


def use_loops(loops: str, monkeypatch) -> None:
    """The fused LSTM's compiled CPU loops, or its pure-PyTorch loops (LSTMKIT_CPU_LOOPS=0; the
    GRU and RNN have only those)."""
    if loops == "python":
        monkeypatch.setenv(cpu_loops.ENV_SWITCH, "0")


@pytest.mark.parametrize(
    "T,lengths",
    [(2, [1]), (4, [4, 1, 2]), (2, [2, 1])],
    ids=["B1-T2", "B3-T4", "B2-T2"],
)
@pytest.mark.parametrize("kind,loops", KINDS_AND_LOOPS)
def test_fused_gradients_of_held_states_past_each_length(kind, loops, T, lengths, monkeypatch):
    """With lengths=, a final state held from step lengths-1 sends its gradient to that step, not
    to the steps after it (torch.nn on the packed sequence), for any batch and sequence length."""
    use_loops(loops, monkeypatch)
    lengths = torch.tensor(lengths)
    got, want = _ours_vs_torch(kind, T, lengths.numel(), lengths=lengths)
    _assert_twin_runs(got, want, f"{kind} lengths={lengths.tolist()}")
    got, want = _ours_vs_torch(kind, T, lengths.numel(), lengths=lengths, bidirectional=True)
    _assert_twin_runs(got, want, f"bidirectional {kind} lengths={lengths.tolist()}")


def _engine_grads(layer, engine: str, x0, h00, loss_fn):
    layer.engine = engine
    x = x0.clone().requires_grad_(True)
    h0 = h00.clone().requires_grad_(True)
    result = layer(x, h0, return_trace=True)
    assert layer.last_engine == engine
    return grads_of(loss_fn(result), layer, [x, h0])


@pytest.mark.parametrize("T", [1, 3])
def test_fused_gru_loss_on_gate_traces_only(T: int) -> None:
    """A loss reading only the GRU's gate trace (no output gradient reaches the operator) gets
    the reference engine's gradients, one step included."""
    layer = lstmkit.GRU(3, 4, dtype=F64)
    x0, h00 = torch.randn(T, 2, 3, dtype=F64), torch.randn(1, 2, 4, dtype=F64)

    def loss(result):
        trace = result[2]
        return weighted_sum([trace.gates[g] for g in trace.gate_names])

    want = _engine_grads(layer, "reference", x0, h00, loss)
    got = _engine_grads(layer, "fused", x0, h00, loss)
    assert_grads(got, want, f"GRU gates only, T={T}")


@pytest.mark.parametrize("T", [1, 3])
def test_rnn_direction_backward_without_an_output_gradient(T: int) -> None:
    """torch.ops.lstmkit.rnn_direction_backward with dHs=None (no gradient reaches the outputs)
    returns zero gradients of the right shapes, one step included."""
    B, H = 2, 4
    xp, h0 = torch.randn(T, B, H, dtype=F64), torch.randn(B, H, dtype=F64)
    w_hh = torch.randn(H, H, dtype=F64)
    none = (None,) * 6  # b_hh, ln_hh, rmask, valid, reset, zoneout_h
    Hs, Hn, _, _ = torch.ops.lstmkit.rnn_direction(xp, h0, w_hh, *none, 0.0, False, False)
    g = torch.ops.lstmkit.rnn_direction_backward(
        None, h0, Hs, Hn, w_hh, *none, 0.0, False, False, [True, False, False]
    )
    assert torch.equal(g[0], torch.zeros(T, B, H, dtype=F64))
    assert torch.equal(g[1], torch.zeros(B, H, dtype=F64))
    assert torch.equal(g[2], torch.zeros(H, H, dtype=F64))


def test_fused_rnn_with_an_infinite_output_gradient() -> None:
    """An infinite upstream gradient gives the reference engine's gradients (infinities, no NaN
    from an inf - inf where no zoneout or length splits the state's gradient)."""
    layer = lstmkit.RNN(3, 2, dtype=F64)
    x0, h00 = torch.randn(1, 1, 3, dtype=F64), torch.randn(1, 1, 2, dtype=F64)
    g_out = torch.tensor([[[float("inf"), 0.0]]], dtype=F64)

    def run(engine):
        layer.engine = engine
        x, h0 = x0.clone().requires_grad_(True), h00.clone().requires_grad_(True)
        out, _ = layer(x, h0)
        assert layer.last_engine == engine
        return torch.autograd.grad(out, [x, h0, layer.weight_hh_l0], g_out)

    want, got = run("reference"), run("fused")
    assert want[1].isinf().all()  # the case under test: infinities, not NaN
    for k, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, equal_nan=True, msg=f"grad {k}")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("zoneout", [(0.0, 0.5), (0.5, 0.0)], ids=["hidden-only", "cell-only"])
@pytest.mark.parametrize("loops", ["compiled", "python"])
def test_fused_lstm_zoneout_of_one_state_with_lengths(zoneout, training, loops, monkeypatch):
    """LSTM zoneout on only one of its states, with lengths=, computes the reference engine's
    outputs, states and gradients (the other state is held by lengths alone)."""
    use_loops(loops, monkeypatch)
    layer = lstmkit.LSTM(3, 4, dtype=F64, zoneout=zoneout).train(training)
    x = torch.randn(5, 3, 3, dtype=F64, requires_grad=True)
    call = make_call(layer, x, None, torch.tensor([5, 2, 4]), return_trace=False)
    results = {}
    for engine in ("reference", "fused"):
        result = engines.ENGINES[engine].run(call)
        tensors = [result.output, *result.h_n]
        grads = grads_of(weighted_sum(tensors), layer, [x])
        results[engine] = ([t.detach() for t in tensors], grads)
    _assert_twin_runs(results["fused"], results["reference"], f"zoneout {zoneout}")


NEEDS = dict(
    w_hh=True, b_hh=True, ln_hh=False, w_hr=False, w_peep=False, ln_c_w=False, ln_c_b=False
)


@pytest.mark.parametrize("lengths", [False, True])
def test_fused_backward_allocates_on_its_inputs_device(lengths: bool) -> None:
    """The fused loops' backward makes every buffer on the inputs' device (the meta device
    stands in for a GPU: any tensor made on the CPU instead would meet a meta one and raise),
    with evaluation-mode zoneout and with or without lengths."""
    T, B, H = 3, 2, 4
    kw = dict(dtype=F64, device="meta")
    valid = torch.ones(T, B, 1, dtype=torch.bool, device="meta") if lengths else None
    h0, c0 = torch.empty(B, H, **kw), torch.empty(B, H, **kw)
    # GRU, zoneout on h (rate 0.3)
    w_hh, b_hh = torch.empty(3 * H, H, **kw), torch.empty(3 * H, **kw)
    cfg = direction_config(
        GRU_CELL, LayerParams(None, w_hh, b_hh=b_hh), StepMasks(), valid, None, (0.3, 0.0), False
    )
    (Hs,), (Hn,), gates, hp = fused_gru.forward_loop(cfg, torch.empty(T, B, 3 * H, **kw), (h0,))
    dH = torch.empty(T, B, H, **kw)
    g = fused_gru.gru_backward(cfg, h0, Hs, Hn, gates, hp, dH, {}, NEEDS)
    assert {k: v.device.type for k, v in g.items()} == dict.fromkeys(g, "meta")
    assert g["xp"].shape == (T, B, 3 * H) and g["w_hh"].shape == (3 * H, H)
    # LSTM, zoneout on both states
    w_hh = torch.empty(4 * H, H, **kw)
    cfg = direction_config(
        LSTM_CELL, LayerParams(None, w_hh), StepMasks(), valid, None, (0.3, 0.2), False
    )
    saved = fused_lstm.lstm_forward(cfg, torch.empty(T, B, 4 * H, **kw), h0, c0)
    g = fused_lstm.lstm_backward(
        cfg, h0, c0, saved, (dH, None, None), None, NEEDS | {"b_hh": False}
    )
    assert {k: v.device.type for k, v in g.items()} == dict.fromkeys(g, "meta")
    assert g["xp"].shape == (T, B, 4 * H) and g["c0"].shape == (B, H)


@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_fused_engine_compiles_into_one_graph_without_gradients(kind: str) -> None:
    """Under torch.compile(fullgraph=True) and no_grad, the fused GRU / RNN trace into one graph
    (the operators are called directly) and compute torch.nn's result."""
    ref, ours = twins(kind, 3, 4, engine="fused")
    x = torch.randn(5, 2, 3, dtype=F64)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(ours, backend="eager", fullgraph=True)
        with torch.no_grad():
            out, h_n = compiled(x)
            want, want_h = ref(x)
    finally:
        torch._dynamo.reset()
    close(out, want, "output")
    close(h_n, want_h, "h_n")


# ---- resets= (nn.inputs._check_resets) ---------------------------------------------------------
@pytest.mark.parametrize(
    "resets,got",
    [
        (torch.zeros(4, 2, dtype=F64), r"torch\.float64"),
        (torch.zeros(4, 2, dtype=torch.int64), r"torch\.int64"),
        ([[False, False]] * 4, "list"),
    ],
    ids=["float", "int", "list"],
)
def test_resets_that_are_not_a_bool_tensor_name_what_came(resets, got: str) -> None:
    """A resets= that is not a bool tensor is a TypeError naming what came: a tensor's dtype,
    anything else's Python type."""
    layer = lstmkit.LSTM(3, 4, dtype=F64)
    x = torch.randn(4, 2, 3, dtype=F64)
    with pytest.raises(TypeError, match=f"resets must be a bool tensor.*, got {got}; convert"):
        layer(x, resets=resets)


@pytest.mark.parametrize("layout", ["unbatched", "batch_first", "time-major"])
def test_resets_of_the_wrong_shape_name_the_layout_the_input_asks_for(layout: str) -> None:
    """A resets= of the wrong shape is a ValueError naming the shape and the layout the input
    asks for: (T,) unbatched, (B, T) with batch_first, else (T, B)."""
    T, B = 5, 2
    layer = lstmkit.GRU(3, 4, dtype=F64, batch_first=layout == "batch_first")
    x, want = {
        "unbatched": (torch.randn(T, 3, dtype=F64), r"\(5,\), \(T,\) unbatched \(one flag"),
        "batch_first": (
            torch.randn(B, T, 3, dtype=F64),
            r"\(2, 5\), \(B, T\) with batch_first \(one flag",
        ),
        "time-major": (torch.randn(T, B, 3, dtype=F64), r"\(5, 2\), \(T, B\) \(one flag"),
    }[layout]
    with pytest.raises(ValueError, match=want + r".*got \(3,\)$"):
        layer(x, resets=torch.zeros(3, dtype=torch.bool))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind,loops", KINDS_AND_LOOPS)
def test_unbatched_resets_on_the_fused_engine(kind, loops, batch_first, monkeypatch) -> None:
    """Unbatched input (T, I) with resets= (T,) on the fused engine: a reset at step 2 starts the
    sequence afresh, as torch.nn run on the two segments apart (output, final state and the
    gradients of the input and weights)."""
    use_loops(loops, monkeypatch)
    ref, ours = twins(kind, 3, 4, engine="fused", batch_first=batch_first)
    x0 = torch.randn(5, 3, dtype=F64)
    resets = torch.tensor([False, False, True, False, False])
    x = x0.clone().requires_grad_(True)
    out, h_n = ours(x, resets=resets)
    assert ours.last_engine == "fused"
    got = grads_of(weighted_sum([out, *states(h_n)]), ours, [x])
    xr = x0.clone().requires_grad_(True)
    first, _ = ref(xr[:2])
    second, want_h = ref(xr[2:])
    want_out = torch.cat([first, second])
    want = grads_of(weighted_sum([want_out, *states(want_h)]), ref, [xr])
    close(out, want_out, f"{kind} output")
    for k, (a, b) in enumerate(zip(states(h_n), states(want_h))):
        close(a, b, f"{kind} final state {k}")
    assert_grads(got, want, f"{kind} unbatched resets")


@pytest.mark.parametrize(
    "engine,loops", [("reference", "compiled"), ("fused", "compiled"), ("fused", "python")]
)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_reset_at_a_sequences_length_is_dropped(kind, engine, loops, monkeypatch) -> None:
    """A reset flagged at step lengths[b], the first step past sequence b's end, is dropped like
    any past the end: outputs and final states are torch.nn's on the packed sequence (the state
    held from step lengths[b] - 1, not restarted from hx)."""
    use_loops(loops, monkeypatch)
    ref, ours = twins(kind, 3, 4, engine=engine)
    T, lengths = 5, torch.tensor([5, 2, 4])
    x = torch.randn(T, 3, 3, dtype=F64)
    hx = tuple(torch.randn(1, 3, 4, dtype=F64) for _ in ours.state_shapes(3))
    hx = hx if kind == "LSTM" else hx[0]
    resets = torch.zeros(T, 3, dtype=torch.bool)
    resets[2, 1] = resets[4, 2] = True  # at lengths[1] and lengths[2]
    out, h_n = ours(x, hx, lengths=lengths, resets=resets)
    assert ours.last_engine == engine
    packed, want_h = ref(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
    want_out, _ = pad_packed_sequence(packed, total_length=T)
    close(out, want_out, f"{kind} output")
    for k, (a, b) in enumerate(zip(states(h_n), states(want_h))):
        close(a, b, f"{kind} final state {k}")


@pytest.mark.parametrize("lengths", [None, [4, 2]], ids=["no-lengths", "lengths"])
def test_resets_move_to_the_inputs_device(lengths) -> None:
    """resets= given on the CPU for input on another device (the meta device stands in for a
    GPU) become (T, B) bool on the input's device, lengths= masking included, and the layer
    runs there."""
    layer = lstmkit.LSTM(2, 3, dtype=F64, device="meta")
    x = torch.empty(4, 2, 2, dtype=F64, device="meta")
    r = torch.tensor([[False, True], [True, False], [False, False], [True, True]])
    lengths = None if lengths is None else torch.tensor(lengths)
    prep = lstmkit.nn.inputs.prepare(layer, x, None, lengths, r)
    assert prep.resets.device.type == "meta"
    assert prep.resets.shape == (4, 2) and prep.resets.dtype == torch.bool
    out, _ = layer(x, resets=r, lengths=lengths)
    assert out.device.type == "meta" and out.shape == (4, 2, 3)


@pytest.mark.parametrize("sorted_indices", [None, [1, 0]], ids=["unsorted-none", "sorted"])
def test_packed_rows_index_is_made_on_the_datas_device(sorted_indices) -> None:
    """_packed_index gives each packed row's (step, sequence) in the padded batch, both index
    tensors made on the data's device (the meta device stands in for a GPU), so neither the
    scatter into the padded batch nor the gather back copies CPU indices there at every use.
    Sequences of lengths 3 and 2 (batch_sizes [2, 2, 1], on the CPU as torch keeps them)."""
    t_want = [0, 0, 1, 1, 2]
    b_want = [0, 1, 0, 1, 0] if sorted_indices is None else [1, 0, 1, 0, 1]
    bs = torch.tensor([2, 2, 1])
    idx = None if sorted_indices is None else torch.tensor(sorted_indices)
    t_idx, b_idx = lstmkit.nn.inputs._packed_index(_raw_packed(torch.randn(5, 3), bs, idx))
    assert (t_idx.tolist(), b_idx.tolist()) == (t_want, b_want)
    data = torch.empty(5, 3, dtype=F64, device="meta")
    idx = None if idx is None else idx.to("meta")
    t_idx, b_idx = lstmkit.nn.inputs._packed_index(_raw_packed(data, bs, idx))
    assert (t_idx.device.type, b_idx.device.type) == ("meta", "meta")
    assert t_idx.shape == b_idx.shape == (5,)


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("used", ["output", "h_n", "c_n"])
@pytest.mark.parametrize("loops", ["compiled", "python"])
def test_fused_lstm_gradients_when_the_loss_uses_one_output_only(loops, used, T, monkeypatch):
    """A loss of the output alone (no gradient reaches c_n), or of c_n alone (none reaches the
    output sequence), on one step or three: the fused LSTM's backward starts its chain from
    zeros of the first state's shape, and gives torch.nn's gradients."""
    use_loops(loops, monkeypatch)
    ref, ours = twins("LSTM", 3, 4, engine="fused")
    x0 = torch.randn(T, 2, 3, dtype=F64)
    grads = []
    for module in (ours, ref):
        x = x0.clone().requires_grad_(True)
        out, (h_n, c_n) = module(x)
        loss = weighted_sum([{"output": out, "h_n": h_n, "c_n": c_n}[used]])
        grads.append(grads_of(loss, module, [x]))
    assert_grads(grads[0], grads[1], f"loss of {used}, T={T}, {loops} loops")


# ---- nn.inputs: the messages of bad states and inputs, and states made on the weights' device --
@pytest.mark.parametrize(
    "kind,batched,hx_dims",
    [("LSTM", True, (2, 2)), ("LSTM", False, (3, 2)), ("GRU", True, (2,)), ("GRU", False, (3,))],
)
def test_states_of_the_wrong_rank_get_torch_nn_s_own_sentence(kind, batched, hx_dims):
    """hx of the wrong number of dimensions: the same RuntimeError text as torch.nn's, which
    names the input's kind, the states and every state's rank."""
    ref, ours = twins(kind, 3, 4)
    x = torch.randn(*((5, 2, 3) if batched else (5, 3)), dtype=F64)
    hx = tuple(torch.zeros(*((1, 2, 4) if d == 3 else (1, 4)), dtype=F64) for d in hx_dims)
    hx = hx if kind == "LSTM" else hx[0]
    with pytest.raises(RuntimeError) as want:
        ref(x, hx)
    with pytest.raises(RuntimeError) as got:
        ours(x, hx)
    assert str(got.value) == str(want.value)
    kind_text = "batched 3-D" if batched else "unbatched 2-D"
    assert str(got.value).startswith(f"For {kind_text} input, ")


def test_messages_name_the_layer_and_the_input():
    """split_states names the layer's class; _check_tensor names `input` (PackedSequence data
    included)."""
    lstm, gru = lstmkit.LSTM(3, 4), lstmkit.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(TypeError, match=r"^LSTM: hx must be a tuple \(h_0, c_0\) of 2 tensors"):
        lstm(x, torch.zeros(1, 2, 4))
    with pytest.raises(TypeError, match=r"^GRU: hx must be a Tensor, got tuple"):
        gru(x, (torch.zeros(1, 2, 4),))
    packed = pack_padded_sequence(x.double(), torch.tensor([5, 3]))
    with pytest.raises(ValueError, match=r"^input dtype \(torch.float64\) does not match"):
        lstm(packed)
    # a state is named hx for a one-state layer, hx[i] for a two-state one
    with pytest.raises(ValueError, match=r"^hx dtype \(torch.float64\)"):
        gru(x, torch.zeros(1, 2, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"^hx\[1\] dtype \(torch.float64\)"):
        lstm(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=F64)))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_default_states_are_made_on_the_weights_device(kind):
    """Without hx the zero states are made where the weights are: on the meta device (shapes
    only) the run stays there; made on the CPU, they would not meet the meta weights."""
    layer = getattr(lstmkit, kind)(3, 4, engine="reference").to("meta")
    out, h_n = layer(torch.randn(5, 2, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (5, 2, 4)
    assert all(h.device.type == "meta" for h in states(h_n))


# ---- nn.checks: each option's name in its own message ------------------------------------------
class _GRULayer(lstmkit.nn.base.RecurrentBase):
    """A layer of the GRU cell through the generic base, as a registered cell's layer is made:
    it takes every option, and the cell refuses those it lacks."""

    cell = GRU_CELL


@pytest.mark.parametrize(
    "makers,kwargs,error,start",
    [
        ("lstm", {"coupled": 1}, TypeError, "coupled should be of type bool, got: int (1)"),
        ("lstm", {"layer_norm": "yes"}, TypeError, "layer_norm should be of type bool, got: "),
        ("gru", {"peephole": True}, ValueError, "peephole=True: the "),
        ("gru", {"coupled": True}, ValueError, "coupled=True: the "),
        (
            "layer",
            {"zoneout": (0.1, 2.0)},
            ValueError,
            "zoneout should be a number in range [0, 1]",
        ),
    ],
    ids=["coupled-type", "layer_norm-type", "gru-peephole", "gru-coupled", "zoneout-pair"],
)
def test_each_options_message_names_that_option(makers, kwargs, error, start):
    makers = {
        "lstm": [lstmkit.LSTM, lstmkit.LSTMCell],
        "gru": [_GRULayer],
        "layer": [lstmkit.LSTM],
    }[makers]
    for make in makers:
        with pytest.raises(error) as e:
            make(3, 4, **kwargs)
        assert str(e.value).startswith(start), str(e.value)


# ---- nn.base: the constructor's defaults, flags and public attributes --------------------------
def test_a_layer_s_defaults_and_attributes_are_torch_nn_s():
    """Defaults as torch.nn's (dropout 0.0: a two-layer LSTM in training is deterministic);
    RNN keeps its nonlinearity; no engine has run before the first call (None, not '')."""
    for kind, kwargs in (("LSTM", {}), ("GRU", {}), ("RNN", {"nonlinearity": "relu"})):
        ref, ours = twins(kind, 3, 4, 2, **kwargs)
        assert ours.dropout == ref.dropout == 0.0
        if kind == "RNN":
            assert ours.nonlinearity == ref.nonlinearity == "relu"
        assert ours.last_engine is None and ours.last_engine_reason is None
        x = torch.randn(5, 2, 3, dtype=F64)
        ours.train()
        close(ours(x)[0], ours(x)[0], f"{kind} in training, twice")
        assert isinstance(ours.last_engine, str) and isinstance(ours.last_engine_reason, str)
    assert _GRULayer(3, 4, 2).dropout == 0.0  # the base's own default, for a registered cell


def test_the_dropout_warning_comes_only_with_dropout_on_one_layer():
    """torch.nn's warning for dropout > 0 with one layer, and none for dropout 0 or two layers."""
    import warnings

    for kwargs in ({}, {"num_layers": 2, "dropout": 0.5}, {"dropout": 0.0}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lstmkit.LSTM(3, 4, **kwargs)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        lstmkit.LSTM(3, 4, dropout=0.5)


@pytest.mark.parametrize("flag", ["batch_first", "bidirectional"])
def test_a_non_bool_layout_flag_is_named_in_its_message(flag):
    with pytest.raises(TypeError) as e:
        lstmkit.LSTM(3, 4, **{flag: 1})
    assert str(e.value).startswith(f"{flag} should be of type bool, got: int (1)")


# ---- engines.base.run_stack: dropout between layers, drawn as torch.nn draws it ---------------
@pytest.mark.parametrize("engine", ["reference", "fused"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_dropout_between_layers_is_torch_nn_s_in_training(kind, engine):
    """In training, dropout p=0.3 on every layer's output but the last, drawn in torch.nn's
    order from the same seed: torch.nn's output and final states exactly (float64)."""
    ref, ours = twins(kind, 3, 4, 3, dropout=0.3, engine=engine)
    ref.train(), ours.train()
    x = torch.randn(5, 2, 3, dtype=F64)
    torch.manual_seed(1)
    want, want_h = ref(x)
    torch.manual_seed(1)
    got, got_h = ours(x)
    assert ours.last_engine == engine
    close(got, want, f"{kind} output")
    for a, b in zip(states(got_h), states(want_h)):
        close(a, b, f"{kind} final state")
    ours.eval()
    assert not torch.equal(ours(x)[0], got)  # dropout was on


def test_each_direction_call_names_its_layer_and_direction(monkeypatch):
    """The engine contract's DirectionCall.layer / .reverse, as run_stack fills them: layer by
    layer, forward then reverse (an engine of one's own may key caches or kernels on them)."""
    engine = engines.ENGINES["reference"]
    seen, run = [], engine.run_direction

    def recording(call, d):
        seen.append((d.layer, d.reverse))
        return run(call, d)

    monkeypatch.setattr(engine, "run_direction", recording)
    lstmkit.GRU(3, 4, 3, bidirectional=True, engine="reference")(torch.randn(5, 2, 3))
    assert seen == [(0, False), (0, True), (1, False), (1, True), (2, False), (2, True)]


def test_a_recurrent_call_copies_and_pickles():
    """RecurrentCall forwards unknown attributes to its spec, except `spec` itself, which is
    missing while copy / pickle rebuild the object: they look up __setstate__ before the fields
    are back, and would recurse without that stop."""
    call = make_call(lstmkit.LSTM(3, 4, 2), torch.randn(5, 2, 3), None, None, False)
    for twin in (copy.copy(call), copy.deepcopy(call), pickle.loads(pickle.dumps(call))):
        assert twin.spec == call.spec and twin.hidden_size == 4 and twin.num_layers == 2
        assert torch.equal(twin.x, call.x)
