"""Streams (lstmkit.nn.stream): token by token equals one forward over the whole sequence.

Every cell and option, both steps (the compiled one under no_grad, the reference one with
gradients or engine="reference"), float64 at 1e-10; per-step traces against the whole-sequence
trace; gradients; weights changed between steps; resets against separately run segments; the
errors a user meets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import lstmkit
from lstmkit.cells import registry
from lstmkit.nn import layers
from tests.parity import loss_of

TOL = 1e-10
T, B, I, H = 7, 3, 5, 6

# (layer class, constructor options, which step the no_grad stream takes)
CASES = {
    "lstm": (lstmkit.LSTM, {}, "fused"),
    "lstm-nobias": (lstmkit.LSTM, {"bias": False}, "fused"),
    "lstm-peephole": (lstmkit.LSTM, {"peephole": True}, "fused"),
    "lstm-coupled": (lstmkit.LSTM, {"coupled": True, "forget_bias": 1.0}, "fused"),
    "lstm-coupled-peephole": (lstmkit.LSTM, {"coupled": True, "peephole": True}, "fused"),
    "lstm-proj": (lstmkit.LSTM, {"proj_size": 4}, "fused"),
    "lstm-layer-norm": (lstmkit.LSTM, {"layer_norm": True}, "reference"),
    "lstm-zoneout": (lstmkit.LSTM, {"zoneout": (0.3, 0.2)}, "reference"),
    "gru": (lstmkit.GRU, {}, "fused"),
    "gru-nobias": (lstmkit.GRU, {"bias": False}, "fused"),
    "gru-layer-norm": (lstmkit.GRU, {"layer_norm": True}, "reference"),
    "gru-zoneout": (lstmkit.GRU, {"zoneout": 0.25}, "reference"),
    "rnn-tanh": (lstmkit.RNN, {}, "fused"),
    "rnn-relu": (lstmkit.RNN, {"nonlinearity": "relu"}, "fused"),
    "rnn-layer-norm": (lstmkit.RNN, {"layer_norm": True}, "reference"),
}


def make(case: str, num_layers: int = 2, **extra):
    cls, opts, _ = CASES[case]
    torch.manual_seed(0)
    layer = cls(I, H, num_layers, dtype=torch.float64, **opts, **extra).eval()
    with torch.no_grad():  # non-trivial peepholes, layer-norm gains and shifts
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


def initial_state(layer, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    shapes = layer.state_shapes(B)
    states = tuple(torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes)
    return states if len(states) > 1 else states[0]


def as_tuple(hx) -> tuple:
    return tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)


def close(got, want, what: str) -> None:
    for g, w in zip(as_tuple(got), as_tuple(want)):
        err = (g - w).abs().max().item()
        assert err <= TOL, f"{what}: max error {err:.3g} > {TOL}"


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_stream_equals_the_whole_sequence(case: str, num_layers: int) -> None:
    layer = make(case, num_layers)
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = initial_state(layer)
    with torch.no_grad():
        out, h_n, trace = layer(x, hx, return_trace=True)
        stream = layer.stream(hx=hx)
        steps = [stream(x[t], return_trace=True) for t in range(T)]
    assert stream.last_engine == CASES[case][2], stream.last_engine_reason
    close(torch.stack([y for y, _ in steps]), out, "output")
    close(stream.state, h_n, "final state")
    for name in trace.gate_names:
        got = torch.cat([tr.gates[name] for _, tr in steps], dim=2)  # (L, 1, T, B, H)
        close(got, trace.gates[name], f"gate {name}")
    close(torch.cat([tr.hidden for _, tr in steps], dim=2), trace.hidden, "traced h")
    if trace.cell is not None:
        close(torch.cat([tr.cell for _, tr in steps], dim=2), trace.cell, "traced c")

    ref = make(case, num_layers, engine="reference")
    with torch.no_grad():
        ref_stream = ref.stream(hx=hx)
        ys = torch.stack([ref_stream(x[t]) for t in range(T)])
    assert ref_stream.last_engine == "reference"
    close(ys, out, "reference step output")


def test_a_new_cell_streams_through_its_own_step() -> None:
    fixture = Path(__file__).parent / "fixtures" / "janet_cell.py"
    spec = importlib.util.spec_from_file_location("janet_cell", fixture)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        layer = lstmkit.nn.layer_class("janet")(I, H, 2, dtype=torch.float64).eval()
        x = torch.randn(T, B, I, dtype=torch.float64)
        with torch.no_grad():
            out, _ = layer(x)
            stream = layer.stream(batch_size=B)
            ys = torch.stack([stream(x[t]) for t in range(T)])
        assert stream.last_engine == "reference"
        assert "JANET" in stream.last_engine_reason
        close(ys, out, "janet")
    finally:
        registry.CELLS.pop("janet", None)
        layers.LAYERS.pop("janet", None)


@pytest.mark.parametrize("case", ["lstm", "lstm-proj", "gru", "rnn-tanh", "lstm-layer-norm"])
def test_gradients_through_a_stream_equal_the_forward_ones(case: str) -> None:
    layer = make(case)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    hx = initial_state(layer)
    out, h_n = layer(x, hx)
    want = torch.autograd.grad(loss_of([out, *as_tuple(h_n)]), [x, *layer.parameters()])
    stream = layer.stream(hx=hx)
    ys = torch.stack([stream(x[t]) for t in range(T)])
    assert stream.last_engine == "reference"
    if CASES[case][2] == "fused":  # what the compiled step would run, but for the gradients
        assert "gradients are needed" in stream.last_engine_reason
    got = torch.autograd.grad(loss_of([ys, *as_tuple(stream.state)]), [x, *layer.parameters()])
    for g, w in zip(got, want):
        close(g, w, "gradient")


def test_switching_between_the_two_steps_keeps_the_state() -> None:
    layer = make("lstm")
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        out, h_n = layer(x)
    stream = layer.stream(batch_size=B)
    ys, engines = [], []
    for t in range(T):
        if t % 2:
            y = stream(x[t])
        else:
            with torch.no_grad():
                y = stream(x[t])
        ys.append(y)
        engines.append(stream.last_engine)
    assert engines == ["fused", "reference"] * 3 + ["fused"]
    close(torch.stack(ys).detach(), out, "output")
    close(tuple(s.detach() for s in stream.state), h_n, "state")


def test_weights_changed_between_steps_are_used_at_once() -> None:
    layer = make("lstm")
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        stream = layer.stream(batch_size=B)
        for t in range(3):
            stream(x[t])
        state = stream.state
        layer.weight_hh_l1.mul_(0.5)  # in place, as an optimizer step does
        layer.bias_ih_l0 = torch.nn.Parameter(layer.bias_ih_l0 + 0.3)  # reassigned
        ys = torch.stack([stream(x[t]) for t in range(3, T)])
        out, _ = layer(x[3:], state)
    close(ys, out, "after the change")


def test_a_reset_starts_those_sequences_afresh() -> None:
    layer = make("gru")
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = initial_state(layer)
    with torch.no_grad():
        stream = layer.stream(hx=hx)
        ys = []
        for t in range(T):
            if t == 4:
                stream.reset(torch.tensor([True, False, True]))
            ys.append(stream(x[t]))
        ys = torch.stack(ys)
        whole, _ = layer(x, hx)
        again, _ = layer(x[4:], hx)  # sequences 0 and 2 from the initial state at step 4
    close(ys[:, 1], whole[:, 1], "kept sequence")
    close(ys[4:, [0, 2]], again[:, [0, 2]], "reset sequences")
    close(ys[:4, [0, 2]], whole[:4, [0, 2]], "before the reset")
    stream.reset()
    close(stream.state, hx, "full reset")


def test_unbatched_steps_for_a_stream_of_one() -> None:
    layer = make("lstm")
    x = torch.randn(T, I, dtype=torch.float64)
    with torch.no_grad():
        out, _ = layer(x)  # unbatched forward: (T, H)
        stream = layer.stream()
        ys = torch.stack([stream(x[t]) for t in range(T)])
    assert ys.shape == (T, H)
    close(ys, out, "unbatched")


def test_training_mode_streams_draw_their_masks() -> None:
    layer = make("lstm", recurrent_dropout=0.5, zoneout=0.2).train()
    stream = layer.stream(batch_size=B)
    with torch.no_grad():
        y = stream(torch.randn(B, I, dtype=torch.float64))
    assert stream.last_engine == "reference"
    assert "zoneout" in stream.last_engine_reason
    assert torch.isfinite(y).all()


def test_what_a_stream_refuses() -> None:
    with pytest.raises(ValueError, match="bidirectional layer cannot stream"):
        lstmkit.LSTM(I, H, bidirectional=True).stream()
    layer = make("lstm")
    stream = layer.stream(batch_size=B)
    with pytest.raises(ValueError, match=r"shape \(3, 5\).*got \(2, 5\)"):
        stream(torch.randn(2, I, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got \(5,\)"):
        stream(torch.randn(I, dtype=torch.float64))  # unbatched needs batch_size 1
    with pytest.raises(ValueError, match="dtype"):
        stream(torch.randn(B, I))  # float32 into a float64 layer
    with pytest.raises(TypeError, match="takes a Tensor"):
        stream([0.0] * I)
    with pytest.raises(ValueError, match=r"reset\(which\) takes a \(3,\) bool"):
        stream.reset(torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        layer.stream(batch_size=0)
    with pytest.raises(RuntimeError, match="Expected hidden"):
        layer.stream(hx=(torch.zeros(1, B, H), torch.zeros(1, B, H)))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_language_model_token_by_token_equals_its_forward(cell: str) -> None:
    from lstmkit.training.model import LanguageModel, ModelConfig, TokenStream

    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=11, cell=cell, emb_size=6, hidden_size=8))
    model = model.double().eval()
    tokens = torch.randint(0, 11, (T, B))
    with torch.no_grad():
        logits, hidden = model(tokens)
        stream = TokenStream(model, batch_size=B)
        steps = torch.stack([stream(tokens[t]) for t in range(T)])
    close(steps, logits, "logits")
    close(stream.hidden, hidden, "hidden")
    with pytest.raises(ValueError, match="model.eval"):
        TokenStream(model.train())


def test_gradients_reach_hx_and_follow_requires_grad_changes() -> None:
    layer = make("lstm")
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0, c0 = (s.requires_grad_() for s in initial_state(layer))
    out, _ = layer(x, (h0, c0))
    want = torch.autograd.grad(loss_of([out]), [h0, c0])
    stream = layer.stream(hx=(h0, c0))
    ys = torch.stack([stream(x[t]) for t in range(T)])
    got = torch.autograd.grad(loss_of([ys]), [h0, c0])
    for g, w in zip(got, want):
        close(g, w, "gradient of hx")

    for p in layer.parameters():
        p.requires_grad_(False)
    stream = layer.stream(batch_size=B)
    y = stream(x[0])
    assert stream.last_engine == "fused" and not y.requires_grad  # nothing to differentiate
    for p in layer.parameters():
        p.requires_grad_(True)
    y = stream(x[1])  # now there is: the next step must build a graph
    assert stream.last_engine == "reference" and y.requires_grad


def test_a_permuted_hx_and_detach_between_windows() -> None:
    layer = make("gru", num_layers=1)
    h0 = torch.randn(B, 1, H, dtype=torch.float64).transpose(0, 1)  # dense, not contiguous
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        out, _ = layer(x, h0)
        stream = layer.stream(hx=h0)
        ys = torch.stack([stream(x[t]) for t in range(T)])
    close(ys, out, "permuted hx")
    stream = layer.stream(batch_size=B)
    stream(x[0]).sum().backward()
    stream.detach()  # truncated BPTT: the next window's graph starts here
    y = stream(x[1])
    grads = torch.autograd.grad(y.sum(), list(layer.parameters()))
    assert all(g is not None for g in grads)


def test_what_a_stream_follows_after_it_was_made() -> None:
    """Weight changes through .data (with refresh()), the layer's dtype, inference mode,
    weight_drop reassigned, eval after training: each changes what the next step computes."""
    layer = make("lstm")
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        stream = layer.stream(batch_size=B)
        stream(x[0])
        layer.weight_hh_l0.data.mul_(2.0)  # no version bump: refresh() says so
        stream.refresh()
        want, _ = layer(x[1:2], stream.state)
        close(stream(x[1]), want[0], "after refresh")
        layer.float()  # the state follows the layer's dtype
        y = stream(x[2].float())
        assert y.dtype == torch.float32 and stream.last_engine == "fused"
        layer.double()
    with torch.inference_mode():
        fresh = layer.stream(batch_size=B)
        fresh(x[0].double())
    with torch.no_grad():
        fresh(x[1].double())  # out of inference mode: its buffers are ordinary tensors again

    layer = make("lstm", recurrent_dropout=0.5, layer_norm=True).train()
    stream = layer.stream(batch_size=B)
    with torch.no_grad():
        stream(x[0].double())
        layer.eval()  # no recurrent dropout mask may survive into evaluation
        stream.reset()
        ys = torch.stack([stream(x[t].double()) for t in range(T)])
        out, _ = layer(x.double())
    close(ys, out, "eval after training")


def test_a_training_stream_with_weight_drop_backpropagates_window_after_window() -> None:
    layer = make("lstm", weight_drop=0.5).train()
    stream = layer.stream(batch_size=B)
    for _ in range(3):
        stream(torch.randn(B, I, dtype=torch.float64)).sum().backward()
        stream.detach()  # the next window's graph starts here
    stream.reset()  # a new sequence: new masks
    stream(torch.randn(B, I, dtype=torch.float64)).sum().backward()


def test_a_stream_copies_forks_and_returns_fresh_outputs() -> None:
    import copy
    import pickle

    layer = make("gru")
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        out, _ = layer(x)
        for step in ("fused", "reference"):
            layer.engine = "auto" if step == "fused" else "reference"
            stream = layer.stream(batch_size=B)
            ys = [stream(x[t]) for t in range(3)]
            ys[-1].zero_()  # the caller's copy: the stream's state is its own
            fork = stream.copy()
            clone = copy.deepcopy(stream)
            back = pickle.loads(pickle.dumps(stream))
            for s in (stream, fork, clone, back):
                rest = torch.stack([s(x[t]) for t in range(3, T)])
                close(rest, out[3:], f"{step} step, continued")
            assert stream.last_engine == step
    with pytest.raises(ValueError, match="batch_size=3 but hx holds 5"):
        layer.stream(hx=torch.zeros(2, 5, H, dtype=torch.float64), batch_size=3)
    with pytest.raises(ValueError, match=r"reset\(which\) takes a \(3,\) bool"):
        stream.reset("x")
    with pytest.raises(ValueError, match="token ids go through an embedding"):
        stream(torch.zeros(B, I, dtype=torch.long))
