"""Every engine against torch.nn in float64: outputs, final states and all gradients (1e-8)."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import F64, compare_run, make_inputs, twins
from torch.nn.utils.rnn import pack_padded_sequence

T, B, I, H = 5, 4, 3, 4
LENGTHS = torch.tensor([3, 5, 1, 5])  # unsorted, with ties and a length-1 sequence

MODULES = [
    ("LSTM", {}),
    ("LSTM", {"proj_size": 2}),
    ("GRU", {}),
    ("RNN", {"nonlinearity": "tanh"}),
    ("RNN", {"nonlinearity": "relu"}),
]
GRID = list(
    itertools.product(
        MODULES,
        [1, 2],  # num_layers
        [False, True],  # bidirectional
        [False, True],  # batch_first
        [True, False],  # bias
        ["padded", "packed", "unbatched"],
        ["reference", "native"],
    )
)


def _id(case) -> str:
    (kind, extra), L, bi, bf, bias, mode, engine = case
    tag = "".join(f"-{k}{v}" for k, v in extra.items())
    return (
        f"{kind}{tag}-L{L}-{'bi' if bi else 'uni'}-{'bf' if bf else 'tf'}-"
        f"{'bias' if bias else 'nobias'}-{mode}-{engine}"
    )


@pytest.mark.parametrize("case", GRID, ids=[_id(c) for c in GRID])
def test_matches_torch(case):
    (kind, extra), L, bi, bf, bias, mode, engine = case
    ref, ours = twins(
        kind,
        I,
        H,
        num_layers=L,
        bias=bias,
        batch_first=bf,
        bidirectional=bi,
        engine=engine,
        **extra,
    )
    D, H_out = (2 if bi else 1), extra.get("proj_size") or H
    batch = () if mode == "unbatched" else (B,)
    hx = [torch.randn(L * D, *batch, H_out, dtype=F64)]
    if kind == "LSTM":
        hx.append(torch.randn(L * D, *batch, H, dtype=F64))
    compare_run(ref, ours, make_inputs(mode, T, B, I, bf, LENGTHS), hx=tuple(hx), batch_first=bf)
    assert ours.last_engine == engine


@pytest.mark.parametrize("engine", ["reference", "native", "auto"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_equals_packing(kind, engine, batch_first):
    """lengths= on padded input gives what packing gives: zeros past each length, final states
    at each length, the same gradients."""
    ref, ours = twins(
        kind, I, H, num_layers=2, bidirectional=True, batch_first=batch_first, engine=engine
    )
    make = make_inputs("packed", T, B, I, batch_first, LENGTHS)

    def make_plain():
        x, _ = make()
        return x, x

    hx = None
    compare_run(ref, ours, make, hx=hx, batch_first=batch_first)
    # Same module, lengths= instead of a PackedSequence: compare against torch's packed run.
    x_ref, packed = make()
    out_ref, h_ref = ref(packed)[:2]
    x, _ = make_plain()
    out, h = ours(x, lengths=LENGTHS)[:2]
    padded_ref = torch.nn.utils.rnn.pad_packed_sequence(
        out_ref, batch_first=batch_first, total_length=T
    )[0]
    torch.testing.assert_close(out, padded_ref, atol=1e-8, rtol=0)
    for a, b in zip(
        h if isinstance(h, tuple) else (h,), h_ref if isinstance(h_ref, tuple) else (h_ref,)
    ):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)
    # and the gradients
    g = torch.randn(out.shape, dtype=F64)
    (out * g).sum().backward()
    (padded_ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-8, rtol=0)


def test_enforce_sorted_packed_input():
    ref, ours = twins("LSTM", I, H, num_layers=2, engine="reference")
    x = torch.randn(T, B, I, dtype=F64)
    packed = pack_padded_sequence(x, torch.tensor([5, 4, 2, 1]))  # sorted: no indices
    (o_ref, (h_ref, c_ref)), (o, (h, c)) = ref(packed), ours(packed)
    assert o.sorted_indices is None
    torch.testing.assert_close(o.data, o_ref.data, atol=1e-8, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-8, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_float32_matches_torch(kind):
    ref = getattr(torch.nn, kind)(I, H, num_layers=2, bidirectional=True)
    import lstmkit

    ours = getattr(lstmkit, kind)(I, H, num_layers=2, bidirectional=True, engine="reference")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-5, rtol=0)


def test_state_dict_both_ways():
    import lstmkit

    ours = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2).to(F64)
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2).to(F64)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())  # same names, same order
    x = torch.randn(T, B, I, dtype=F64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-8, rtol=0)


def test_multilayer_dropout_training_matches_torch_in_eval_and_drops_in_train():
    ref, ours = twins("LSTM", I, H, num_layers=3, dropout=0.5, engine="reference")
    x = torch.randn(T, B, I, dtype=F64)
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-8, rtol=0)
    ours.train()
    a, b = ours(x)[0], ours(x)[0]
    assert not torch.allclose(a, b), "dropout between layers should make training runs differ"


def test_functional_call_uses_given_parameters():
    import lstmkit

    ours = lstmkit.LSTM(I, H).to(F64)
    x = torch.randn(T, B, I, dtype=F64)
    zeros = {n: torch.zeros_like(p) for n, p in ours.named_parameters()}
    out, _ = torch.func.functional_call(ours, zeros, (x,))
    assert torch.count_nonzero(out) == 0  # all weights zero -> h = 0.5 * tanh(0) = 0


SHORT_T = 6
SHORT_LENGTHS = torch.tensor([4, 2, 3])  # every length below the padded length SHORT_T


@pytest.mark.parametrize("engine", ["native", "fused", "reference", "auto"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_all_shorter_than_the_padding(kind, engine, batch_first):
    """lengths= whose maximum is below the padded length T: the output keeps all T steps (zeros
    past each length), as torch.nn's packed run padded with total_length=T; final states and
    input gradients agree too."""
    ref, ours = twins(
        kind, I, H, num_layers=2, bidirectional=True, batch_first=batch_first, engine=engine
    )
    nb = len(SHORT_LENGTHS)
    shape = (nb, SHORT_T, I) if batch_first else (SHORT_T, nb, I)
    base = torch.randn(shape, dtype=F64)
    x = base.clone().requires_grad_(True)
    x_ref = base.clone().requires_grad_(True)
    out, h = ours(x, lengths=SHORT_LENGTHS)[:2]
    packed = pack_padded_sequence(
        x_ref, SHORT_LENGTHS, batch_first=batch_first, enforce_sorted=False
    )
    out_ref_packed, h_ref = ref(packed)
    out_ref = torch.nn.utils.rnn.pad_packed_sequence(
        out_ref_packed, batch_first=batch_first, total_length=SHORT_T
    )[0]
    want_shape = (nb, SHORT_T, 2 * H) if batch_first else (SHORT_T, nb, 2 * H)
    assert tuple(out.shape) == want_shape
    for b, n in enumerate(SHORT_LENGTHS.tolist()):  # zeros past each length, checked by hand
        past = out[b, n:] if batch_first else out[n:, b]
        assert past.shape[0] == SHORT_T - n and torch.count_nonzero(past) == 0
    torch.testing.assert_close(out, out_ref, atol=1e-8, rtol=0)
    hs = h if isinstance(h, tuple) else (h,)
    hs_ref = h_ref if isinstance(h_ref, tuple) else (h_ref,)
    assert len(hs) == len(hs_ref)
    for a, b in zip(hs, hs_ref):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)
    g = torch.randn(want_shape, dtype=F64)
    (out * g).sum().backward()
    (out_ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-8, rtol=0)
    assert engine == "auto" or ours.last_engine == engine
