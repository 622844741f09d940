"""The fused engine against the reference engine on one shared RecurrentCall (float64, 1e-8).

Every cell, every option of the core, in training mode with the same sampled masks and in
evaluation mode, over a structural grid (layers, directions, batch_first, bias, lengths, traces).
Outputs, final states, traces and the gradients of a loss reading all of them w.r.t. the input,
the initial states and every parameter must agree.
"""

from __future__ import annotations

import pytest
import torch
from fused_helpers import DT, compiled_loops, make_call, one_thread, run_engine  # noqa: F401

import lstmkit
from lstmkit.engines import cpu_loops

T, B, I, H = 5, 3, 4, 6

# (layer class, constructor extras, training mode)
OPTIONS = {
    "lstm": (lstmkit.LSTM, {}, True),
    "lstm-proj": (lstmkit.LSTM, {"proj_size": 4}, True),
    "lstm-peephole": (lstmkit.LSTM, {"peephole": True}, True),
    "lstm-coupled": (lstmkit.LSTM, {"coupled": True}, True),
    "lstm-coupled-peephole": (lstmkit.LSTM, {"coupled": True, "peephole": True}, True),
    "lstm-layer-norm": (lstmkit.LSTM, {"layer_norm": True}, True),
    "lstm-recurrent-dropout": (lstmkit.LSTM, {"recurrent_dropout": 0.4}, True),
    "lstm-zoneout-train": (lstmkit.LSTM, {"zoneout": (0.3, 0.5)}, True),
    "lstm-zoneout-eval": (lstmkit.LSTM, {"zoneout": (0.3, 0.5)}, False),
    "lstm-weight-drop": (lstmkit.LSTM, {"weight_drop": 0.5}, True),
    "lstm-everything": (
        lstmkit.LSTM,
        {
            "proj_size": 3,
            "peephole": True,
            "layer_norm": True,
            "recurrent_dropout": 0.3,
            "zoneout": 0.3,
            "weight_drop": 0.3,
            "forget_bias": 1.0,
        },
        True,
    ),
    "lstm-everything-eval": (
        lstmkit.LSTM,
        {
            "proj_size": 3,
            "peephole": True,
            "coupled": True,
            "layer_norm": True,
            "zoneout": (0.2, 0.4),
        },
        False,
    ),
    "gru": (lstmkit.GRU, {}, True),
    "gru-layer-norm": (lstmkit.GRU, {"layer_norm": True}, True),
    "gru-recurrent-dropout": (lstmkit.GRU, {"recurrent_dropout": 0.4}, True),
    "gru-zoneout-train": (lstmkit.GRU, {"zoneout": 0.4}, True),
    "gru-zoneout-eval": (lstmkit.GRU, {"zoneout": 0.4}, False),
    "gru-everything": (
        lstmkit.GRU,
        {"layer_norm": True, "recurrent_dropout": 0.3, "weight_drop": 0.3, "zoneout": 0.3},
        True,
    ),
    "rnn-tanh": (lstmkit.RNN, {}, True),
    "rnn-relu": (lstmkit.RNN, {"nonlinearity": "relu"}, True),
    "rnn-layer-norm": (lstmkit.RNN, {"layer_norm": True}, True),
    "rnn-everything": (
        lstmkit.RNN,
        {"layer_norm": True, "recurrent_dropout": 0.3, "weight_drop": 0.3, "zoneout": 0.3},
        True,
    ),
    "rnn-relu-zoneout-eval": (lstmkit.RNN, {"nonlinearity": "relu", "zoneout": 0.3}, False),
}

# (num_layers, bidirectional, batch_first, bias, lengths, trace, inter-layer dropout)
STRUCTURES = {
    "1layer": (1, False, False, True, None, False, 0.0),
    "2layer-bi-lengths-trace": (2, True, False, True, [5, 2, 4], True, 0.0),
    "2layer-bf-nobias-lengths-trace": (2, False, True, False, [1, 5, 3], True, 0.0),
    "1layer-bi-bf-lengths": (1, True, True, True, [3, 5, 5], False, 0.0),
    "2layer-bi-bf-nobias-trace": (2, True, True, False, None, True, 0.0),
    "3layer-bi-dropout-lengths": (3, True, False, True, [4, 1, 5], False, 0.4),
}


def _layer(option: str, structure: str):
    cls, extras, training = OPTIONS[option]
    L, bidir, bf, bias, lengths, trace, dropout = STRUCTURES[structure]
    if not bias:
        extras = {k: v for k, v in extras.items() if k != "forget_bias"}
    layer = cls(
        I,
        H,
        num_layers=L,
        bidirectional=bidir,
        batch_first=bf,
        bias=bias,
        dropout=dropout,
        dtype=DT,
        **extras,
    )
    layer.train(training)
    with torch.no_grad():  # non-trivial layer-norm gains and shifts
        for name, p in layer.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.3 * torch.randn_like(p))
    return layer, lengths, trace


@pytest.mark.usefixtures("compiled_loops")
@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("option", list(OPTIONS))
def test_fused_matches_reference(option: str, structure: str) -> None:
    _compare(option, structure, T)


LSTM_OPTIONS = [k for k in OPTIONS if k.startswith("lstm")]


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("option", LSTM_OPTIONS)
def test_fused_python_loops_match_reference(option: str, structure: str, monkeypatch) -> None:
    """The pure-PyTorch LSTM loops (where the compiled ones cannot be built) on the same grid."""
    monkeypatch.setenv(cpu_loops.ENV_SWITCH, "0")
    _compare(option, structure, T)


@pytest.mark.parametrize("option", ["lstm-everything", "gru-everything", "rnn-everything"])
def test_single_step_matches_reference(option: str) -> None:
    _compare(option, "2layer-bi-bf-nobias-trace", 1)


def _compare(option: str, structure: str, T: int) -> None:
    torch.manual_seed(0)
    layer, lengths, trace = _layer(option, structure)
    if lengths is not None:
        lengths = [min(n, T) for n in lengths]
    shape = (B, T, I) if layer.batch_first else (T, B, I)
    x = torch.randn(shape, dtype=DT, requires_grad=True)
    hx = tuple(torch.randn(s, dtype=DT, requires_grad=True) for s in layer.state_shapes(B))
    call = make_call(layer, x, hx if len(hx) > 1 else hx[0], lengths, trace)
    names = ["input"] + [f"hx[{k}]" for k in range(len(hx))]
    names += [n for n, _ in layer.named_parameters()]
    wrt = [x, *hx, *layer.parameters()]
    ref, ref_grads = run_engine("reference", call, wrt)
    fused, fused_grads = run_engine("fused", call, wrt)

    close = {"atol": 1e-8, "rtol": 1e-7}
    torch.testing.assert_close(fused.output, ref.output, **close)
    for a, b in zip(fused.h_n, ref.h_n):
        torch.testing.assert_close(a, b, **close)
    if trace:
        for name in ref.trace.gate_names:
            torch.testing.assert_close(fused.trace.gates[name], ref.trace.gates[name], **close)
        torch.testing.assert_close(fused.trace.hidden, ref.trace.hidden, **close)
        if ref.trace.cell is not None:
            torch.testing.assert_close(fused.trace.cell, ref.trace.cell, **close)
    for name, a, b in zip(names, fused_grads, ref_grads):
        assert (a is None) == (b is None), f"gradient of {name}: one engine gives None"
        if b is not None:
            torch.testing.assert_close(a, b, **close, msg=lambda m, n=name: f"grad {n}: {m}")
