"""Bad input gets a clear error, in torch's words where torch has them. Nothing broadcasts."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

T, B, I, H = 4, 3, 5, 6


def _same_error(fn_ref, fn_ours, exc):
    with pytest.raises(exc) as theirs:
        fn_ref()
    with pytest.raises(exc) as ours:
        fn_ours()
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_input_errors_match_torch(kind):
    ref, ours = getattr(torch.nn, kind)(I, H), getattr(lstmkit, kind)(I, H)
    ours.load_state_dict(ref.state_dict())
    _same_error(
        lambda: ref(torch.randn(T, B, I + 1)), lambda: ours(torch.randn(T, B, I + 1)), RuntimeError
    )
    _same_error(lambda: ref(torch.randn(T)), lambda: ours(torch.randn(T)), ValueError)
    bad_h = torch.randn(1, B + 1, H)
    hx = (bad_h, torch.randn(1, B, H)) if kind == "LSTM" else bad_h
    _same_error(
        lambda: ref(torch.randn(T, B, I), hx), lambda: ours(torch.randn(T, B, I), hx), RuntimeError
    )
    h2 = torch.randn(B, H)
    hx = (h2, h2) if kind == "LSTM" else h2
    with pytest.raises(RuntimeError, match="should also be 3-D"):
        ours(torch.randn(T, B, I), hx)
    _same_error(lambda: ref(torch.randn(0, B, I)), lambda: ours(torch.randn(0, B, I)), RuntimeError)


@pytest.mark.parametrize("engine", ["fused", "reference", "native"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_empty_batch_like_torch(kind, engine):
    """B = 0 runs (as in torch) and gives empty outputs and gradients on every engine."""
    ref, ours = getattr(torch.nn, kind)(I, H), getattr(lstmkit, kind)(I, H, engine=engine)
    x = torch.randn(T, 0, I, requires_grad=True)
    (out, _), (theirs, _) = ours(x), ref(x)
    assert out.shape == theirs.shape == (T, 0, H)
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_dtype_and_device_mismatch():
    m = lstmkit.LSTM(I, H)
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match weight"):
        m(torch.randn(T, B, I, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"hx\[1\] dtype"):
        m(torch.randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H, dtype=torch.float64)))
    with pytest.raises(ValueError, match="is on meta but the weights are on cpu"):
        m(torch.randn(T, B, I, device="meta"))


def test_lengths_errors():
    m = lstmkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    with pytest.raises(ValueError, match=r"expected shape \(3,\)"):
        m(x, lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"in \[1, 4\]"):
        m(x, lengths=torch.tensor([1, 2, 5]))
    with pytest.raises(ValueError, match=r"in \[1, 4\]"):
        m(x, lengths=torch.tensor([0, 2, 3]))
    with pytest.raises(ValueError, match="integers"):
        m(x, lengths=torch.tensor([1.0, 2.0, 3.0]))
    packed = pack_padded_sequence(x, torch.tensor([4, 3, 1]))
    with pytest.raises(ValueError, match="not both"):
        m(packed, lengths=torch.tensor([4, 3, 1]))
    with pytest.raises(ValueError, match="batched"):
        m(x[:, 0], lengths=torch.tensor([2]))
    out, _ = m(x, lengths=[4, 1, 2])  # a list of ints is fine
    assert out.shape == (T, B, H)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"dropout": 2.0}, ValueError, "dropout should be a number in range"),
        ({"proj_size": H}, ValueError, "proj_size has to be smaller than hidden_size"),
        ({"proj_size": -1}, ValueError, "proj_size should be a positive integer"),
        ({"num_layers": 0}, ValueError, "num_layers must be greater than zero"),
        ({"bias": 1}, TypeError, "bias should be of type bool"),
        ({"engine": "cuda-magic"}, ValueError, "unknown engine 'cuda-magic'"),
        ({"forget_bias": 1.0, "bias": False}, ValueError, "forget_bias needs bias=True"),
        ({"zoneout": 1.5}, ValueError, r"zoneout should be a number in range \[0, 1\]"),
        ({"zoneout": (0.1, 0.2, 0.3)}, ValueError, "pair"),
        ({"weight_drop": 1.0}, ValueError, r"weight_drop should be a number in range \[0, 1\)"),
        ({"recurrent_dropout": -0.1}, ValueError, "recurrent_dropout should be"),
        ({"peephole": "yes"}, TypeError, "peephole should be of type bool"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lstmkit.LSTM(I, H, **kwargs)


def test_constructor_errors_other_cells():
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'"):
        lstmkit.RNN(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="input_size must be greater than zero"):
        lstmkit.GRU(0, H)
    with pytest.raises(TypeError, match="hidden_size should be of type int"):
        lstmkit.GRU(I, 2.5)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        lstmkit.LSTM(I, H, dropout=0.5)


def test_requested_engine_that_cannot_serve_says_why():
    m = lstmkit.LSTM(I, H, peephole=True, engine="native")
    with pytest.raises(ValueError, match="engine='native' cannot run this configuration: peephole"):
        m(torch.randn(T, B, I))
    m = lstmkit.LSTM(I, H, engine="native")
    with pytest.raises(ValueError, match="gate traces"):
        m(torch.randn(T, B, I), return_trace=True)


def test_zoneout_reassigned_like_the_constructor_takes_it() -> None:
    """`layer.zoneout = 0.2` after construction: a rate or a (cell, hidden) pair, checked."""
    layer = lstmkit.LSTM(3, 4)
    layer.zoneout = 0.2
    assert layer.zoneout == (0.2, 0.2) and layer.spec.zoneout == (0.2, 0.2)
    layer(torch.randn(5, 2, 3))  # training mode: masks sampled with the new rates
    gru = lstmkit.GRU(3, 4)
    gru.zoneout = (0.3, 0.1)
    assert gru.zoneout == (0.0, 0.1)  # a GRU has no cell state
    with pytest.raises(ValueError, match=r"zoneout should be a number in range \[0, 1\]"):
        layer.zoneout = 1.5


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("kind", ["LSTM", "LSTMCell"])
def test_non_finite_forget_bias_is_refused(kind, value) -> None:
    """Issue 10, item 9: `lstmkit.LSTM(4, 8, forget_bias=float("nan"))` was accepted and every
    output was NaN. Refused now, on construction and on reassignment."""
    with pytest.raises(ValueError, match=r"forget_bias must be a finite number, got -?(nan|inf)"):
        getattr(lstmkit, kind)(4, 8, forget_bias=value)
    layer = lstmkit.LSTM(4, 8, forget_bias=1.0)
    with pytest.raises(ValueError, match="forget_bias must be a finite number"):
        layer.forget_bias = value
    assert layer.forget_bias == 1.0
    with pytest.raises(TypeError, match="forget_bias must be a number or None, got: str"):
        lstmkit.LSTM(4, 8, forget_bias="1.0")


def test_reassigned_attributes_are_checked_where_they_are_set() -> None:
    """An unknown engine set after construction was a KeyError at the next forward; a
    forget_bias set on a GRU (or a bias-free LSTM) a ValueError / KeyError from inside
    reset_parameters. Each is now refused by the assignment, in a sentence."""
    layer = lstmkit.LSTM(I, H)
    with pytest.raises(ValueError, match="unknown engine 'cuda-magic'"):
        layer.engine = "cuda-magic"
    with pytest.raises(TypeError, match="engine should be a str, got: list"):
        layer.engine = ["native"]
    assert layer.engine == "auto"
    with pytest.raises(ValueError, match="the GRU cell has no forget gate 'f'"):
        lstmkit.GRU(I, H).forget_bias = 1.0
    with pytest.raises(ValueError, match="forget_bias needs bias=True"):
        lstmkit.LSTM(I, H, bias=False).forget_bias = 1.0
    with pytest.raises(ValueError, match=r"dropout should be a number in range \[0, 1\]"):
        layer.dropout = float("nan")
    with pytest.raises(ValueError, match=r"weight_drop should be a number in range \[0, 1\)"):
        layer.weight_drop = 1.0
    layer.dropout, layer.engine = 0.25, "reference"  # good values still go through
    assert layer.spec.dropout == 0.25 and layer(torch.randn(T, B, I))[0].shape == (T, B, H)


@pytest.mark.parametrize("engine", ["auto", "reference", "native", "fused"])
def test_packed_indices_that_disagree_are_refused(engine) -> None:
    """Issue 10, item 10: a PackedSequence whose sorted_indices / unsorted_indices disagree with
    its batch_sizes gave more output rows than its batch_sizes sum to (torch.nn keeps them).
    Refused now, naming the part that is wrong; a consistent one built by hand still matches
    torch.nn."""
    from torch.nn.utils.rnn import PackedSequence

    ref = torch.nn.LSTM(4, 8).double()
    ours = lstmkit.LSTM(4, 8, engine=engine).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    p = pack_padded_sequence(x, torch.tensor([2, 5, 3]), enforce_sorted=False)
    assert int(p.batch_sizes.sum()) == 10
    dup = PackedSequence(p.data, p.batch_sizes, torch.tensor([1, 1, 0]), p.unsorted_indices)
    with pytest.raises(ValueError, match=r"sorted_indices must be a permutation of range\(3\)"):
        ours(dup)
    swapped = PackedSequence(p.data, p.batch_sizes, p.sorted_indices[[1, 0, 2]], p.unsorted_indices)
    with pytest.raises(ValueError, match="must be the inverse permutation of sorted_indices"):
        ours(swapped)
    only_unsorted = PackedSequence(p.data, p.batch_sizes, None, p.unsorted_indices)
    with pytest.raises(ValueError, match="None reads as the identity"):
        ours(only_unsorted)
    bad_sizes = PackedSequence(p.data, torch.tensor([3, -1, 8]))  # crashed the process before
    with pytest.raises(ValueError, match="batch_sizes must be positive and non-increasing"):
        ours(bad_sizes)
    extra_row = PackedSequence(torch.cat([p.data, p.data[:1]]), p.batch_sizes, p.sorted_indices)
    with pytest.raises(ValueError, match="data has 11 rows but its batch_sizes sum to 10"):
        ours(extra_row)  # the extra row was dropped silently
    by_hand = PackedSequence(p.data, p.batch_sizes, p.sorted_indices)  # inverse computed
    h0 = (torch.randn(1, 3, 8, dtype=torch.float64), torch.randn(1, 3, 8, dtype=torch.float64))
    (out, (h, c)), (out_ref, (h_ref, c_ref)) = ours(by_hand, h0), ref(by_hand, h0)
    assert out.data.shape == out_ref.data.shape == (10, 8)
    for a, b in ((out.data, out_ref.data), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_input_errors_name_the_cell(kind):
    """A cell's input errors start with the cell's class name: in torch's exact words for a 3-D
    input, in the same form for a non-tensor input (torch fails there with an AttributeError)."""
    ref, ours = getattr(torch.nn, kind)(I, H), getattr(lstmkit, kind)(I, H)
    _same_error(lambda: ref(torch.randn(2, B, I)), lambda: ours(torch.randn(2, B, I)), ValueError)
    with pytest.raises(ValueError, match=rf"^{kind}: Expected input to be 1D or 2D, got 3D"):
        ours(torch.randn(2, B, I))
    with pytest.raises(TypeError, match=rf"^{kind}: input must be a Tensor, got list$"):
        ours([0.0] * I)


def test_cell_state_errors_name_the_cell_and_the_state():
    """The state of a one-state cell is called hx in its errors, an LSTMCell's hx[0] / hx[1]; a
    wrong size is reported with the expected shape (batched (B, H), unbatched (H,))."""
    gru, lstm = lstmkit.GRUCell(I, H), lstmkit.LSTMCell(I, H)
    x, x1 = torch.randn(B, I), torch.randn(I)
    with pytest.raises(TypeError, match=r"^GRUCell: hx must be a Tensor, got list$"):
        gru(x, [torch.randn(B, H)])
    with pytest.raises(TypeError, match=r"^LSTMCell: hx must be a tuple \(h_0, c_0\)"):
        lstm(x, torch.randn(B, H))
    with pytest.raises(RuntimeError, match=rf"^Expected hx size \({B}, {H}\), got \[{B}, 7\]$"):
        gru(x, torch.randn(B, 7))
    with pytest.raises(RuntimeError, match=rf"^Expected hx size \({H},\), got \[7\]$"):
        gru(x1, torch.randn(7))
    with pytest.raises(RuntimeError, match=rf"^Expected hx size \({B}, {H}\), got \[2, {H}\]$"):
        gru(x, torch.randn(2, H))
    with pytest.raises(ValueError, match=r"^GRUCell: Expected hx to be 2D like the input, got 1D"):
        gru(x, torch.randn(H))
    with pytest.raises(ValueError, match=r"^hx dtype \(torch.float64\) does not match weight"):
        gru(x, torch.randn(B, H, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=rf"^Expected hx\[0\] size \({H},\), got \[7\]$"):
        lstm(x1, (torch.randn(7), torch.randn(H)))
    with pytest.raises(ValueError, match=r"^hx\[1\] dtype \(torch.float64\) does not match"):
        lstm(x, (torch.randn(B, H), torch.randn(B, H, dtype=torch.float64)))


def test_cell_size_errors_name_the_argument():
    with pytest.raises(TypeError, match=r"^input_size should be of type int, got: str"):
        lstmkit.LSTMCell(str(I), H)
    with pytest.raises(ValueError, match=r"^input_size must be greater than zero, got 0$"):
        lstmkit.RNNCell(0, H)
    with pytest.raises(TypeError, match=r"^hidden_size should be of type int, got: float"):
        lstmkit.LSTMCell(I, 2.5)
    with pytest.raises(ValueError, match=r"^hidden_size must be greater than zero, got 0$"):
        lstmkit.GRUCell(I, 0)
