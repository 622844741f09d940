"""lstmkit layers with engine="fused" against torch.nn's own layers (float64, 1e-8).

Same weights (state dicts load both ways); padded, PackedSequence and unbatched input; outputs,
final states and gradients of the input, the initial states and every parameter.
"""

from __future__ import annotations

import itertools

import parity
import pytest
import torch
from fused_helpers import one_thread  # noqa: F401  (autouse fixture)
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

DT = torch.float64
T, B, I, H = 6, 3, 4, 5

CELLS = {
    "lstm": (torch.nn.LSTM, lstmkit.LSTM, {}),
    "lstm-proj": (torch.nn.LSTM, lstmkit.LSTM, {"proj_size": 3}),
    "gru": (torch.nn.GRU, lstmkit.GRU, {}),
    "rnn-tanh": (torch.nn.RNN, lstmkit.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (torch.nn.RNN, lstmkit.RNN, {"nonlinearity": "relu"}),
}
GRID = list(itertools.product([1, 2], [False, True], [False, True], [True, False]))


def _pair(cell: str, L: int, bidir: bool, bf: bool, bias: bool):
    theirs_cls, ours_cls, extras = CELLS[cell]
    kw = dict(num_layers=L, bidirectional=bidir, batch_first=bf, bias=bias, dtype=DT, **extras)
    theirs = theirs_cls(I, H, **kw)
    ours = ours_cls(I, H, engine="fused", **kw)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _check(theirs, ours, make_input, hx_shapes):
    """Both modules forward and backward through tests/parity.py, from the same initial states."""
    torch.manual_seed(1)
    hx = tuple(torch.randn(s, dtype=DT) for s in hx_shapes)
    bf = ours.batch_first
    want = parity.run(theirs, make_input, hx, batch_first=bf)
    got = parity.run(ours, make_input, hx, batch_first=bf)
    assert ours.last_engine == "fused"
    parity.assert_same(got, want, DT)


@pytest.mark.parametrize("L,bidir,bf,bias", GRID)
@pytest.mark.parametrize("cell", list(CELLS))
def test_padded_matches_torch(cell, L, bidir, bf, bias) -> None:
    torch.manual_seed(0)
    theirs, ours = _pair(cell, L, bidir, bf, bias)
    shape = (B, T, I) if bf else (T, B, I)
    x0 = torch.randn(shape, dtype=DT)

    def make_input():
        x = x0.clone().requires_grad_()
        return x, x

    _check(theirs, ours, make_input, ours.state_shapes(B))


@pytest.mark.parametrize(
    "L,bidir,bf", list(itertools.product([1, 2], [False, True], [False, True]))
)
@pytest.mark.parametrize("cell", list(CELLS))
def test_packed_matches_torch(cell, L, bidir, bf) -> None:
    torch.manual_seed(0)
    theirs, ours = _pair(cell, L, bidir, bf, True)
    shape = (B, T, I) if bf else (T, B, I)
    x0 = torch.randn(shape, dtype=DT)
    lengths = torch.tensor([4, 6, 1])  # unsorted: exercises the sort / unsort indices

    def make_input():
        packed = pack_padded_sequence(x0, lengths, batch_first=bf, enforce_sorted=False)
        data = packed.data.clone().requires_grad_()
        return data, packed._replace(data=data)

    _check(theirs, ours, make_input, ours.state_shapes(B))


@pytest.mark.parametrize("cell", list(CELLS))
def test_unbatched_matches_torch(cell) -> None:
    torch.manual_seed(0)
    theirs, ours = _pair(cell, 2, True, False, True)
    x0 = torch.randn(T, I, dtype=DT)

    def make_input():
        x = x0.clone().requires_grad_()
        return x, x

    _check(theirs, ours, make_input, [s[:1] + s[2:] for s in ours.state_shapes(1)])
