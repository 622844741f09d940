"""The fuzz layer over the layers' inputs (issue 10): hypothesis draws the configurations.

The properties, over random small layers and cells (kind, sizes, layers, directions,
batch_first, bias, proj_size, nonlinearity, engine):

- a well-formed call (padded, lengths=, a PackedSequence with random lengths sorted or not,
  unbatched; with or without initial states) gives what torch.nn gives, outputs, final states
  and every gradient, in float64 to 1e-8;
- a bad constructor argument (negative or zero sizes, floats where ints go, NaN / inf, bools,
  strings, None, ...) or a bad reassignment of a checked attribute raises a ValueError or
  TypeError whose message names the argument; any other exception fails the test;
- a malformed forward call (feature size, dims, dtype, lengths, hx, a PackedSequence whose
  parts disagree) raises ValueError / TypeError / RuntimeError with a message that names what
  was wrong; an IndexError, KeyError, AttributeError, a crash or a result fails the test.

The profile (tests/conftest.py) is derandomized, so a failure reproduces as is;
LSTMKIT_FUZZ=explore draws 10x more, fresh examples.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import parity
import pytest
import torch
from conftest import F64, twins
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstmkit

KINDS = ("LSTM", "GRU", "RNN")
ENGINES = ("auto", "reference", "native", "fused")  # the engines that run on CPU (and packed)
MODES = ("padded", "lengths", "packed", "unbatched")


@dataclass
class Case:
    kind: str
    I: int
    H: int
    T: int
    B: int
    kwargs: dict
    engine: str
    mode: str
    lengths: list[int]
    enforce_sorted: bool
    with_hx: bool
    seed: int

    @property
    def directions(self) -> int:
        return 2 if self.kwargs["bidirectional"] else 1

    @property
    def h_out(self) -> int:
        return self.kwargs.get("proj_size") or self.H

    @property
    def batch_first(self) -> bool:
        return self.kwargs["batch_first"]


@st.composite
def cases(draw, modes=MODES) -> Case:
    kind = draw(st.sampled_from(KINDS))
    H = draw(st.integers(1, 4))
    kwargs = {
        "num_layers": draw(st.integers(1, 2)),
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "bidirectional": draw(st.booleans()),
    }
    if kind == "LSTM":
        kwargs["proj_size"] = draw(st.integers(0, H - 1))
    if kind == "RNN":
        kwargs["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    T, B = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    enforce_sorted = draw(st.booleans())
    if enforce_sorted:  # pack_padded_sequence(enforce_sorted=True) takes decreasing lengths
        lengths = sorted(lengths, reverse=True)
    return Case(
        kind=kind,
        I=draw(st.integers(1, 4)),
        H=H,
        T=T,
        B=B,
        kwargs=kwargs,
        engine=draw(st.sampled_from(ENGINES)),
        mode=draw(st.sampled_from(modes)),
        lengths=lengths,
        enforce_sorted=enforce_sorted,
        with_hx=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _hx(case: Case, batched: bool = True):
    """Random initial states of the right shapes, as the layer takes them (tuple for LSTM)."""
    batch = (case.B,) if batched else ()
    LD = case.kwargs["num_layers"] * case.directions
    states = [torch.randn(LD, *batch, case.h_out, dtype=F64)]
    if case.kind == "LSTM":
        states.append(torch.randn(LD, *batch, case.H, dtype=F64))
    return tuple(states)


class _TorchWithLengths:
    """torch.nn's module seen through lstmkit's `lengths=`: pack, run, pad back to all T steps
    (what lstmkit documents lengths= to be). Duck-types what parity.run calls."""

    def __init__(self, ref: torch.nn.Module, T: int, batch_first: bool) -> None:
        self.ref, self.T, self.batch_first = ref, T, batch_first

    def zero_grad(self) -> None:
        self.ref.zero_grad()

    def named_parameters(self):
        return self.ref.named_parameters()

    def __call__(self, x, hx=None, lengths=None):
        packed = pack_padded_sequence(
            x, lengths, batch_first=self.batch_first, enforce_sorted=False
        )
        out, h = self.ref(packed, hx)
        padded = pad_packed_sequence(out, batch_first=self.batch_first, total_length=self.T)
        return padded[0], h


@given(case=cases())
def test_matches_torch_on_random_layers_and_inputs(case: Case) -> None:
    ref, ours = twins(case.kind, case.I, case.H, engine=case.engine, **case.kwargs)
    torch.manual_seed(case.seed)
    bf = case.batch_first
    shape = (case.B, case.T, case.I) if bf else (case.T, case.B, case.I)
    base = torch.randn(shape, dtype=F64)
    lengths = torch.tensor(case.lengths)

    def make():
        x = base.clone().requires_grad_(True)
        if case.mode == "packed":
            packed = pack_padded_sequence(
                x, lengths, batch_first=bf, enforce_sorted=case.enforce_sorted
            )
            return x, packed
        if case.mode == "unbatched":  # (T, I) whatever batch_first says, as in torch.nn
            return x, (x[0] if bf else x[:, 0])
        return x, x

    hx = _hx(case, batched=case.mode != "unbatched") if case.with_hx else None
    kwargs = {}
    if case.mode == "lengths":
        kwargs["lengths"] = lengths
        ref = _TorchWithLengths(ref, case.T, bf)
    want = parity.run(ref, make, hx, batch_first=bf, **kwargs)
    got = parity.run(ours, make, hx, batch_first=bf, **kwargs)
    parity.assert_same(got, want, F64)
    if case.mode == "packed":  # the very same packing, indices included
        for name in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(got.packed, name), getattr(want.packed, name)
            assert (a is None and b is None) or torch.equal(a, b), name
    if case.engine != "auto":
        assert ours.last_engine == case.engine


CELL_KINDS = ("LSTMCell", "GRUCell", "RNNCell")


@given(
    kind=st.sampled_from(CELL_KINDS),
    sizes=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)),
    bias=st.booleans(),
    batched=st.booleans(),
    with_hx=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_cells_match_torch(kind, sizes, bias, batched, with_hx, seed) -> None:
    I, H, B = sizes
    ref = getattr(torch.nn, kind)(I, H, bias=bias).to(F64)
    ours = getattr(lstmkit, kind)(I, H, bias=bias).to(F64)
    ours.load_state_dict(ref.state_dict())
    torch.manual_seed(seed)
    batch = (B,) if batched else ()
    x = torch.randn(*batch, I, dtype=F64)
    n_states = 2 if kind == "LSTMCell" else 1
    hx = tuple(torch.randn(*batch, H, dtype=F64) for _ in range(n_states)) if with_hx else None
    results = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        hi = None if hx is None else tuple(h.clone().requires_grad_(True) for h in hx)
        out = module(xi, hi if hi is None or n_states > 1 else hi[0])
        outs = parity.states_of(out)
        parity.loss_of(outs).backward()
        grads = [xi.grad, *(h.grad for h in hi or ())]
        grads += [p.grad for p in module.parameters()]
        results.append((outs, grads))
    (outs_ref, grads_ref), (outs, grads) = results
    for a, b in zip(outs + tuple(grads), outs_ref + tuple(grads_ref), strict=True):
        parity.close(a, b, F64, f"{kind} output or gradient")


# ---- constructor arguments ---------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
NOT_A_NUMBER = st.one_of(
    st.text(max_size=3), st.none(), st.just([1]), st.just({}), st.complex_numbers(max_magnitude=2)
)
NOT_AN_INT = st.one_of(st.floats(), st.booleans(), NOT_A_NUMBER)  # floats include NaN and inf
BAD_SIZE = st.one_of(st.integers(max_value=0), NOT_AN_INT)
BAD_FLAG = st.one_of(st.integers(), st.floats(), NOT_A_NUMBER)  # 0 and 1 are not bools either
BAD_RATE = st.one_of(
    st.floats().filter(lambda v: not 0 <= v <= 1),  # NaN passes the filter: it is a bad rate
    st.integers().filter(lambda v: not 0 <= v <= 1),
    st.booleans(),
    NOT_A_NUMBER,
)
BAD_ZONEOUT = st.one_of(
    BAD_RATE,
    st.tuples(BAD_RATE, st.floats(0, 1)),
    st.tuples(st.floats(0, 1), BAD_RATE),
    st.lists(st.floats(0, 1), min_size=3, max_size=4),
    st.just(()),
)
BAD_FORGET_BIAS = st.one_of(  # None is no bad forget_bias: it means torch's init
    st.sampled_from([NAN, INF, -INF]),
    st.booleans(),
    st.text(max_size=3),
    st.just([1.0]),
    st.complex_numbers(max_magnitude=2),
    st.just(torch.tensor(1.0)),
)
BAD_NONLINEARITY = st.one_of(
    st.text(max_size=5).filter(lambda v: v not in ("tanh", "relu")), st.integers(), st.none()
)
BAD_ENGINE = st.one_of(
    st.text(max_size=5).filter(lambda v: v != "auto" and v not in lstmkit.engines.ENGINES),
    st.integers(),
    st.none(),
    st.just(["auto"]),
)

# argument -> (bad values, kinds that take it)
LAYER_ARGS = {
    "input_size": (BAD_SIZE, KINDS),
    "hidden_size": (BAD_SIZE, KINDS),
    "num_layers": (BAD_SIZE, KINDS),
    "proj_size": (st.one_of(st.integers(max_value=-1), st.integers(4, 99), NOT_AN_INT), ("LSTM",)),
    "bias": (BAD_FLAG, KINDS),
    "batch_first": (BAD_FLAG, KINDS),
    "bidirectional": (BAD_FLAG, KINDS),
    "dropout": (BAD_RATE, KINDS),
    "nonlinearity": (BAD_NONLINEARITY, ("RNN",)),
    "forget_bias": (BAD_FORGET_BIAS, ("LSTM",)),
    "peephole": (BAD_FLAG, ("LSTM",)),
    "coupled": (BAD_FLAG, ("LSTM",)),
    "layer_norm": (BAD_FLAG, KINDS),
    "recurrent_dropout": (BAD_RATE, KINDS),
    "weight_drop": (st.one_of(BAD_RATE, st.just(1.0)), KINDS),
    "zoneout": (BAD_ZONEOUT, KINDS),
    "engine": (BAD_ENGINE, KINDS),
}
CELL_ARGS = {
    "input_size": (BAD_SIZE, CELL_KINDS),
    "hidden_size": (BAD_SIZE, CELL_KINDS),
    "bias": (BAD_FLAG, CELL_KINDS),
    "nonlinearity": (BAD_NONLINEARITY, ("RNNCell",)),
    "forget_bias": (BAD_FORGET_BIAS, ("LSTMCell",)),
    "peephole": (BAD_FLAG, ("LSTMCell",)),
    "coupled": (BAD_FLAG, ("LSTMCell",)),
    "layer_norm": (BAD_FLAG, CELL_KINDS),
}


@st.composite
def bad_arguments(draw, table: dict) -> tuple[str, str, object]:
    name = draw(st.sampled_from(sorted(table)))
    values, kinds = table[name]
    return draw(st.sampled_from(kinds)), name, draw(values)


@given(bad=st.one_of(bad_arguments(LAYER_ARGS), bad_arguments(CELL_ARGS)))
def test_bad_constructor_argument_is_named(bad) -> None:
    kind, name, value = bad
    kwargs = {"input_size": 3, "hidden_size": 4, name: value}
    with pytest.raises((ValueError, TypeError), match=re.escape(name)):
        getattr(lstmkit, kind)(**kwargs)


REASSIGNED = {  # the attributes a layer checks when they are set after construction
    "dropout": BAD_RATE,
    "recurrent_dropout": BAD_RATE,
    "weight_drop": st.one_of(BAD_RATE, st.just(1.0)),
    "zoneout": BAD_ZONEOUT,
    "forget_bias": BAD_FORGET_BIAS,
    "engine": BAD_ENGINE,
}


@given(
    kind=st.sampled_from(KINDS),
    bad=st.sampled_from(sorted(REASSIGNED)).flatmap(lambda n: st.tuples(st.just(n), REASSIGNED[n])),
)
def test_bad_reassignment_is_refused_and_changes_nothing(kind, bad) -> None:
    name, value = bad
    layer = getattr(lstmkit, kind)(3, 4)
    before, spec = getattr(layer, name), layer.spec
    with pytest.raises((ValueError, TypeError), match=re.escape(name)):
        setattr(layer, name, value)
    assert getattr(layer, name) == before and layer.spec == spec
    out, _ = layer(torch.randn(2, 1, 3))
    assert out.shape == (2, 1, 4) and bool(out.isfinite().all())


NOT_FINITE = r"forget_bias must be a finite number, got -?(nan|inf)"


@given(kind=st.sampled_from(["LSTM", "LSTMCell"]), value=st.floats(width=32))
def test_forget_bias_finite_or_refused(kind, value) -> None:
    """Issue 10, item 9: a NaN or infinite forget_bias was accepted and every output was NaN.
    A finite one lands on the forget rows; a non-finite one is refused with a sentence."""
    if not math.isfinite(value):
        with pytest.raises(ValueError, match=NOT_FINITE):
            getattr(lstmkit, kind)(3, 4, forget_bias=value)
        return
    module = getattr(lstmkit, kind)(3, 4, forget_bias=value)
    bias = module.bias_ih_l0 if kind == "LSTM" else module.bias_ih
    assert bool((bias[4:8] == value).all())


# ---- malformed forward calls -------------------------------------------------------------------


def _module_and_input(case: Case):
    module = getattr(lstmkit, case.kind)(case.I, case.H, engine=case.engine, **case.kwargs)
    module = module.to(F64)
    bf = case.batch_first
    shape = (case.B, case.T, case.I) if bf else (case.T, case.B, case.I)
    return module, torch.randn(shape, dtype=F64)


def _packed(case: Case, x: torch.Tensor) -> PackedSequence:
    return pack_padded_sequence(
        x, torch.tensor(case.lengths), batch_first=case.batch_first, enforce_sorted=False
    )


def _resized(t: torch.Tensor, dim: int, delta: int) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = max(0, shape[dim] + delta)
    return torch.zeros(shape, dtype=t.dtype)


def _bad_feature_size(case, module, x, draw):
    delta = draw(st.sampled_from([-1, 1, 3]))
    return (_resized(x, -1, delta),), {}, RuntimeError, r"input_size"


def _bad_dims(case, module, x, draw):
    shape = draw(st.sampled_from([(case.I,), (1, case.T, case.B, case.I), ()]))
    return (torch.zeros(shape, dtype=F64),), {}, ValueError, r"Expected input to be 2D or 3D"


def _bad_dtype(case, module, x, draw):
    dtype = draw(st.sampled_from([torch.float32, torch.int64, torch.complex128, torch.bool]))
    return (x.to(dtype),), {}, ValueError, r"input dtype \(torch\.\w+\) does not match"


def _not_a_tensor(case, module, x, draw):
    value = draw(st.sampled_from([x.tolist(), x.numpy(), None, 3, "x"]))
    return (value,), {}, TypeError, r"input must be a Tensor or a PackedSequence"


def _empty_sequence(case, module, x, draw):
    return (_resized(x, 1 if case.batch_first else 0, -99),), {}, RuntimeError, "sequence length"


def _bad_lengths(case, module, x, draw):
    B, T = case.B, case.T
    choice = draw(st.sampled_from(["range", "count", "float", "2d", "junk", "unbatched", "both"]))
    lengths = list(case.lengths)
    if choice == "range":
        lengths[draw(st.integers(0, B - 1))] = draw(st.sampled_from([0, -1, T + 1, 2**40]))
        return (x,), {"lengths": lengths}, ValueError, r"every length must be in \[1, \d+\]"
    if choice == "count":
        wrong = draw(st.sampled_from([0, B - 1, B + 1]) if B > 1 else st.sampled_from([0, 2]))
        bad = torch.ones(wrong, dtype=torch.int64)
        return (x,), {"lengths": bad}, ValueError, rf"expected shape \({B},\)"
    if choice == "float":
        bad = torch.tensor(lengths, dtype=draw(st.sampled_from([torch.float64, torch.bool])))
        return (x,), {"lengths": bad}, ValueError, "lengths must hold integers"
    if choice == "2d":
        return (x,), {"lengths": torch.tensor([lengths])}, ValueError, "expected shape"
    if choice == "junk":
        bad = draw(st.sampled_from(["abc", [None] * B, {"a": 1}, [2**70] * B, object()]))
        return (x,), {"lengths": bad}, TypeError, r"lengths must be a 1-D tensor or a list"
    if choice == "unbatched":
        x1 = x[0] if case.batch_first else x[:, 0]
        return (x1,), {"lengths": [1]}, ValueError, "lengths= needs batched 3-D input"
    return (_packed(case, x),), {"lengths": lengths}, ValueError, "not both"


def _bad_hx(case, module, x, draw):
    hx = list(_hx(case))
    choice = draw(st.sampled_from(["shape", "dims", "dtype", "structure"]))
    k = draw(st.integers(0, len(hx) - 1))
    if choice == "shape":
        dim, delta = draw(st.integers(0, 2)), draw(st.sampled_from([-1, 1]))
        hx[k] = _resized(hx[k], dim, delta)
        what = r"Expected hidden(\[\d\])? size"
    elif choice == "dims":
        hx[k] = hx[k][0] if draw(st.booleans()) else hx[k].unsqueeze(0)
        what = r"hx (and cx )?should also be 3-D"
    elif choice == "dtype":
        hx[k] = hx[k].float()
        what = r"hx(\[\d\])? dtype \(torch.float32\) does not match"
    else:
        bad = draw(st.sampled_from(["int", "tuple", "list3", "ints"]))
        value = {
            "int": 5,
            "tuple": tuple(hx) + (hx[0],),
            "list3": [hx[0]] * 3,
            "ints": (1, 2),
        }[bad]
        return (x, value), {}, TypeError, r"hx must be a (Tensor|tuple)"
    exc = ValueError if choice == "dtype" else RuntimeError
    return (x, tuple(hx) if len(hx) > 1 else hx[0]), {}, exc, what


def _bad_packed(case, module, x, draw):
    p = _packed(case, x)
    data, bs, si, ui = p.data, p.batch_sizes.clone(), p.sorted_indices, p.unsorted_indices
    B = int(bs[0])
    choices = ["bs_grow", "bs_shrink_last", "bs_dtype", "rows", "idx_range", "idx_len"]
    choices += ["idx_dup", "swap"] if B > 1 else []  # one sequence: [0] is a permutation
    choice = draw(st.sampled_from(choices))
    if choice == "bs_grow":  # one step claims one more sequence: order or sum breaks
        bs[draw(st.integers(0, len(bs) - 1))] += 1
    elif choice == "bs_shrink_last":
        bs[-1] = draw(st.sampled_from([0, -1, -5]))
    elif choice == "bs_dtype":
        bs = bs.to(draw(st.sampled_from([torch.float32, torch.int32])))
    elif choice == "rows":
        delta = draw(st.sampled_from([-1, 1]))
        data = torch.cat([data, data[:1]]) if delta > 0 else data[:-1]
    elif choice == "idx_dup":
        si = torch.zeros(B, dtype=torch.int64)
    elif choice == "idx_range":
        si = si.clone()
        si[draw(st.integers(0, B - 1))] = draw(st.sampled_from([B, -1, 99]))
    elif choice == "idx_len":
        si = torch.arange(B + draw(st.sampled_from([-1, 1])))
    else:  # two rows of sorted_indices swapped, unsorted_indices kept: no longer each other's
        si = si.clone()  # inverse (issue 10, item 10: 13 output rows for 10 input rows)
        si[[0, 1]] = si[[1, 0]]
    bad = PackedSequence(data, bs, si, ui)
    return (bad,), {}, ValueError, r"PackedSequence (batch_sizes|data|sorted_indices|unsorted)"


MALFORMATIONS = {
    "feature_size": _bad_feature_size,
    "dims": _bad_dims,
    "dtype": _bad_dtype,
    "not_a_tensor": _not_a_tensor,
    "empty_sequence": _empty_sequence,
    "lengths": _bad_lengths,
    "hx": _bad_hx,
    "packed": _bad_packed,
}


@given(case=cases(modes=("padded",)), which=st.sampled_from(sorted(MALFORMATIONS)), data=st.data())
def test_malformed_call_is_refused_with_a_sentence(case: Case, which: str, data) -> None:
    module, x = _module_and_input(case)
    args, kwargs, exc, match = MALFORMATIONS[which](case, module, x, data.draw)
    with pytest.raises(exc, match=match):
        module(*args, **kwargs)


@given(
    kind=st.sampled_from(CELL_KINDS),
    which=st.sampled_from(["feature", "dims", "dtype", "not_a_tensor", "hx_shape", "hx_type"]),
    data=st.data(),
)
def test_malformed_cell_call_is_refused_with_a_sentence(kind, which, data) -> None:
    cell = getattr(lstmkit, kind)(3, 4)
    x = torch.randn(2, 3)
    n_states = 2 if kind == "LSTMCell" else 1
    hx = [torch.zeros(2, 4) for _ in range(n_states)]
    if which == "feature":
        width = data.draw(st.sampled_from([2, 4]))
        args, exc, match = (torch.randn(2, width),), RuntimeError, "inconsistent input_size"
    elif which == "dims":
        args, exc, match = (torch.randn(1, 2, 3),), ValueError, "Expected input to be 1D or 2D"
    elif which == "dtype":
        args, exc, match = (x.double(),), ValueError, r"input dtype \(torch.float64\)"
    elif which == "not_a_tensor":
        args, exc, match = (x.tolist(),), TypeError, "input must be a Tensor"
    elif which == "hx_shape":
        k = data.draw(st.integers(0, n_states - 1))
        hx[k] = torch.zeros(data.draw(st.sampled_from([(3, 4), (2, 5), (4,), (1, 2, 4)])))
        args = (x, tuple(hx) if n_states > 1 else hx[0])
        exc, match = (RuntimeError, ValueError), r"Expected hx(\[\d\])? (size|to be 2D)"
    else:
        value = data.draw(st.sampled_from([5, "h", tuple(hx) * 2, [x]]))
        args, exc, match = (x, value), TypeError, r"hx must be a (Tensor|tuple)"
    with pytest.raises(exc, match=match):
        cell(*args)
