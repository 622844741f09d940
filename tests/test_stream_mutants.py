"""Streams (lstmkit.nn.stream): the behaviours a mutation run found untested.

Each test holds a stream against a value that does not come from the stream's own code: the
layer's whole-sequence forward (same seed where masks are drawn: a stream draws recurrent dropout
and weight drop once, as one forward call does), torch's RNG state, or an explicit exception.
Grouped by behaviour: arguments, which step runs, the regularisers' masks in training, state
handling (reset, copy, gradients), following the layer (dtype, device, inference mode), traces."""

from __future__ import annotations

import copy

import pytest
import torch
from test_stream import TOL, B, H, I, T, initial_state  # noqa: F401  (the same sizes and states)

import lstmkit
from lstmkit.cells import Cell, CellOptions, LayerParams, register_cell, registry
from lstmkit.cells.gates import split
from lstmkit.nn import layers

CELLS = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU}


def make(cell: str, num_layers: int = 2, **extra):
    """A float64 layer in evaluation mode with non-trivial parameters (seed 0)."""
    torch.manual_seed(0)
    layer = CELLS[cell](I, H, num_layers, dtype=torch.float64, **extra).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


def same(got, want, what: str, tol: float = TOL) -> None:
    """Equal shapes (no broadcasting) and values within tol, for tensors or tuples of them."""
    got = tuple(got) if isinstance(got, (tuple, list)) else (got,)
    want = tuple(want) if isinstance(want, (tuple, list)) else (want,)
    assert len(got) == len(want), f"{what}: {len(got)} tensors, want {len(want)}"
    for g, w in zip(got, want):
        assert g.shape == w.shape, f"{what}: shape {tuple(g.shape)}, want {tuple(w.shape)}"
        assert g.dtype == w.dtype, f"{what}: dtype {g.dtype}, want {w.dtype}"
        err = (g.detach() - w.detach()).abs().max().item()
        assert err <= tol, f"{what}: max error {err:.3g} > {tol}"


def steps(stream, x) -> torch.Tensor:
    return torch.stack([stream(x[t]) for t in range(x.shape[0])])


def sequence(seed: int = 5, n: int = T, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, B, I, generator=gen, dtype=dtype)


# ---- arguments ---------------------------------------------------------------------------------
def test_batch_size_one_is_a_valid_batch() -> None:
    """batch_size=1 (the smallest batch) is accepted and steps as forward does."""
    layer = make("lstm")
    x = sequence()[:, :1]
    with torch.no_grad():
        want, _ = layer(x)
        stream = layer.stream(batch_size=1)
        same(steps(stream, x), want, "batch of one")


def test_a_bool_batch_size_is_refused() -> None:
    """batch_size=True is a bool, not a batch size: ValueError (though bool is an int)."""
    layer = make("lstm")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        layer.stream(batch_size=True)


def test_a_fresh_stream_has_run_no_step() -> None:
    """Before the first step last_engine and last_engine_reason are None, as on a layer."""
    stream = make("lstm").stream(batch_size=B)
    assert stream.last_engine is None
    assert stream.last_engine_reason is None


def test_an_unbatched_hx_is_refused_with_the_streams_own_error() -> None:
    """A 2-D hx (forward's unbatched form) is refused: ValueError, a stream's hx is batched."""
    layer = make("gru")
    with pytest.raises(ValueError, match="a stream's hx is batched"):
        layer.stream(hx=torch.zeros(2, H, dtype=torch.float64))


def test_a_malformed_lstm_hx_is_refused_as_forward_refuses_it() -> None:
    """hx = (h 3-D, c 2-D): B is read from h, and the 2-D c is forward's RuntimeError."""
    layer = make("lstm")
    hx = (torch.zeros(2, B, H, dtype=torch.float64), torch.zeros(2, H, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="should also be 3-D") as forward_error:
        layer(sequence(), hx)
    with pytest.raises(RuntimeError, match="should also be 3-D") as stream_error:
        layer.stream(hx=hx)
    assert str(stream_error.value) == str(forward_error.value)


def test_the_stream_starts_from_hx_as_it_was_when_made() -> None:
    """stream(hx=...) owns its state: writing into hx afterwards does not change stream.state."""
    layer = make("lstm")
    h0, c0 = initial_state(layer)
    want = (h0.clone(), c0.clone())
    stream = layer.stream(hx=(h0, c0))
    h0.add_(1.0)
    c0.mul_(-2.0)
    same(stream.state, want, "state after hx was written")


# ---- which step runs ---------------------------------------------------------------------------
# (constructor options, training, which step a no_grad stream takes)
STEP_CASES = {
    "train-1-layer": ({"num_layers": 1}, True, "fused"),
    "train-2-layers": ({"num_layers": 2}, True, "fused"),
    "eval-recurrent-dropout": ({"num_layers": 2, "recurrent_dropout": 0.5}, False, "fused"),
    "eval-dropout": ({"num_layers": 2, "dropout": 0.5}, False, "fused"),
}


@pytest.mark.parametrize("case", sorted(STEP_CASES))
def test_the_compiled_step_runs_where_nothing_is_drawn(case: str) -> None:
    """Training without masks to draw, or evaluation with dropout options: the compiled step
    runs, and computes what forward computes."""
    opts, training, step = STEP_CASES[case]
    layer = make("lstm", **opts).train(training)
    x = sequence()
    with torch.no_grad():
        want, _ = layer(x)
        stream = layer.stream(batch_size=B)
        ys = steps(stream, x)
    assert stream.last_engine == step, stream.last_engine_reason
    same(ys, want, case)


def test_one_layer_dropout_draws_nothing_so_the_compiled_step_runs() -> None:
    """dropout acts between layers only: a one-layer stream in training runs the compiled step."""
    with pytest.warns(UserWarning, match="dropout option adds dropout"):
        layer = make("lstm", num_layers=1, dropout=0.5).train()
    x = sequence()
    with torch.no_grad():
        want, _ = layer(x)
        stream = layer.stream(batch_size=B)
        ys = steps(stream, x)
    assert stream.last_engine == "fused", stream.last_engine_reason
    same(ys, want, "one layer, dropout")


@pytest.mark.parametrize(
    "opts", [{"recurrent_dropout": 0.5}, {"dropout": 0.5}], ids=["recurrent", "between-layers"]
)
def test_masks_drawn_in_training_send_the_step_to_the_reference_engine(opts: dict) -> None:
    """Recurrent dropout, or dropout between two layers, in training: the reference step."""
    layer = make("lstm", num_layers=2, **opts).train()
    stream = layer.stream(batch_size=B)
    with torch.no_grad():
        stream(sequence()[0])
    assert stream.last_engine == "reference"
    assert "dropout in training" in stream.last_engine_reason


def test_a_bfloat16_stream_runs_the_reference_step() -> None:
    """The compiled step runs float32 / float64 only: a bfloat16 CPU layer takes the reference
    step, whose values are the bfloat16 forward's."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(I, H, 2, dtype=torch.bfloat16, engine="reference").eval()
    x = sequence(dtype=torch.bfloat16)
    with torch.no_grad():
        want, _ = layer(x)
        layer.engine = "auto"
        stream = layer.stream(batch_size=B)
        ys = steps(stream, x)
    assert stream.last_engine == "reference"
    assert "float32 / float64" in stream.last_engine_reason
    same(ys.float(), want.float(), "bfloat16", tol=0.05)


# ---- the regularisers in training --------------------------------------------------------------
def test_a_training_step_without_regularisers_is_forwards_and_draws_nothing() -> None:
    """Training, no dropout / zoneout: the reference step equals the training forward (h and c
    both updated) and consumes no random numbers."""
    layer = make("lstm", engine="reference").train()
    x = sequence()
    with torch.no_grad():
        want, (h_n, c_n) = layer(x)
        stream = layer.stream(batch_size=B)
        rng = torch.random.get_rng_state()
        ys = steps(stream, x)
        assert torch.equal(torch.random.get_rng_state(), rng), "a step drew random numbers"
    assert stream.last_engine == "reference"
    same(ys, want, "output")
    same(stream.state, (h_n, c_n), "final state")


@pytest.mark.parametrize("zoneout", [(1.0, 0.0), (0.0, 1.0)], ids=["cell", "hidden"])
def test_zoneout_in_training_keeps_the_previous_state(zoneout: tuple) -> None:
    """Zoneout at rate 1 in training keeps every unit of that state (c, or h) at its previous
    value, as the training forward does."""
    layer = make("lstm", zoneout=zoneout).train()
    x = sequence()
    hx = initial_state(layer)
    with torch.no_grad():
        want, h_n = layer(x, hx)
        stream = layer.stream(hx=hx)
        ys = steps(stream, x)
    same(ys, want, "output")
    same(stream.state, h_n, "final state")
    kept = 1 if zoneout[0] == 1.0 else 0  # (h, c): which state zoneout holds
    same(stream.state[kept], hx[kept], "the zoned-out state")


def test_dropout_between_layers_in_training() -> None:
    """dropout=1 between two layers in training zeroes layer 1's input, and only that: the
    training forward's values."""
    layer = make("lstm", dropout=1.0).train()
    x = sequence()
    with torch.no_grad():
        want, h_n = layer(x)
        stream = layer.stream(batch_size=B)
        ys = steps(stream, x)
    assert stream.last_engine == "reference"
    same(ys, want, "output")
    same(stream.state, h_n, "final state")


def test_dropout_between_layers_is_off_in_evaluation() -> None:
    """In evaluation the reference step applies no dropout: the evaluation forward's values."""
    layer = make("lstm", dropout=0.5, engine="reference")
    x = sequence()
    with torch.no_grad():
        want, _ = layer(x)
        stream = layer.stream(batch_size=B)
        ys = steps(stream, x)
    assert stream.last_engine == "reference"
    same(ys, want, "evaluation")


@pytest.mark.parametrize(
    "opts", [{"recurrent_dropout": 0.5}, {"weight_drop": 0.5}], ids=["recurrent", "weight"]
)
def test_a_streams_masks_are_drawn_once_as_one_forward_draws_them(opts: dict) -> None:
    """Recurrent dropout / weight drop in training: the stream draws its masks at the first step
    (as forward, from the same seed) and keeps them across refresh(), a switch to a step with
    gradients and detach(); a full reset() draws new ones at the next step."""
    layer = make("lstm", **opts).train()
    x = sequence()
    with torch.no_grad():
        torch.manual_seed(11)
        want, _ = layer(x)
        torch.manual_seed(12)
        again, _ = layer(x[:3])
    stream = layer.stream(batch_size=B)
    ys = []
    torch.manual_seed(11)
    for t in range(T):
        if t == 2:
            stream.refresh()
        if t == 4:  # gradients needed: the reference step, another key
            ys.append(stream(x[t]).detach())
            stream.detach()
            continue
        with torch.no_grad():
            ys.append(stream(x[t]))
    same(torch.stack(ys), want, "one mask for the stream")
    stream.reset()
    torch.manual_seed(12)
    with torch.no_grad():
        same(steps(stream, x[:3]), again, "new masks after reset()")


@pytest.mark.parametrize(
    "opts", [{"recurrent_dropout": 0.5}, {"weight_drop": 0.5}], ids=["recurrent", "weight"]
)
def test_masks_are_drawn_again_in_the_layers_new_dtype(opts: dict) -> None:
    """After layer.float() a training stream draws its masks again, in float32: the float32
    training forward's values from the stream's state, same seed."""
    layer = make("lstm", **opts).train()
    x = sequence()
    stream = layer.stream(batch_size=B)
    with torch.no_grad():
        stream(x[0])
        state = tuple(s.float() for s in stream.state)
        layer.float()
        torch.manual_seed(13)
        want, _ = layer(x[1:].float(), state)
        torch.manual_seed(13)
        ys = steps(stream, x[1:].float())
    same(ys, want, "float32 after the change", tol=1e-5)


# ---- state: reset, copy, gradients -------------------------------------------------------------
def test_a_partial_reset_after_reference_steps() -> None:
    """reset(which) on a stream whose state the reference step holds: those sequences restart
    from hx, the others go on (forward over the segments)."""
    layer = make("lstm", engine="reference")
    x = sequence()
    hx = initial_state(layer)
    which = torch.tensor([True, False, True])
    with torch.no_grad():
        whole, _ = layer(x, hx)
        again, _ = layer(x[4:], hx)
        stream = layer.stream(hx=hx)
        ys = steps(stream, x[:4])
        stream.reset(which)
        ys = torch.cat([ys, steps(stream, x[4:])])
    same(ys[:, 1], whole[:, 1], "kept sequence")
    same(ys[4:, [0, 2]], again[:, [0, 2]], "reset sequences")


def test_a_partial_reset_of_a_one_layer_stream() -> None:
    """reset(which) works on a one-layer stream (the compiled step's buffers)."""
    layer = make("gru", num_layers=1)
    x = sequence()
    hx = initial_state(layer)
    with torch.no_grad():
        whole, _ = layer(x, hx)
        again, _ = layer(x[3:], hx)
        stream = layer.stream(hx=hx)
        ys = steps(stream, x[:3])
        stream.reset(torch.tensor([False, True, False]))
        ys = torch.cat([ys, steps(stream, x[3:])])
    assert stream.last_engine == "fused"
    same(ys[:, [0, 2]], whole[:, [0, 2]], "kept sequences")
    same(ys[3:, 1], again[:, 1], "reset sequence")


def test_a_copy_keeps_the_gradient_path_to_hx() -> None:
    """stream.copy() of a stream with autograd history: gradients through the fork reach hx, as
    forward's gradients over the same steps."""
    layer = make("lstm")
    x = sequence()
    h0, c0 = (s.requires_grad_() for s in initial_state(layer))
    out, _ = layer(x[:2], (h0, c0))
    want = torch.autograd.grad(out[1].sum(), [h0, c0])
    stream = layer.stream(hx=(h0, c0))
    stream(x[0])
    fork = stream.copy()
    got = torch.autograd.grad(fork(x[1]).sum(), [h0, c0])
    same(got, want, "gradient of hx through the fork")


def test_a_step_with_gradients_survives_later_compiled_steps() -> None:
    """A reference step's graph does not hold the buffers the compiled step writes: after more
    no_grad steps its gradients are still forward's."""
    layer = make("lstm")
    x = sequence()
    hx = initial_state(layer)
    out, _ = layer(x[:1], hx)
    params = list(layer.parameters())
    want = torch.autograd.grad(out[0].sum(), params)
    stream = layer.stream(hx=hx)
    y = stream(x[0])
    assert stream.last_engine == "reference"
    with torch.no_grad():
        stream(x[1])
        stream(x[2])
    assert stream.last_engine == "fused"
    same(torch.autograd.grad(y.sum(), params), want, "gradient of the first step")


# ---- following the layer -----------------------------------------------------------------------
def test_gradients_reach_hx_across_a_dtype_change_and_reset_restores_it() -> None:
    """layer.float() mid-stream: a state with autograd history keeps it (gradients reach the
    float64 hx, as through forward), and reset() restores hx in float32."""
    layer = make("lstm")
    x = sequence()
    h0, c0 = (s.requires_grad_() for s in initial_state(layer))
    wide = copy.deepcopy(layer)
    narrow = copy.deepcopy(layer).float()
    _, state = wide(x[:1], (h0, c0))
    out, _ = narrow(x[1:2].float(), tuple(s.float() for s in state))
    want = torch.autograd.grad(out[0].sum(), [h0, c0])

    stream = layer.stream(hx=(h0, c0))
    stream(x[0])
    layer.float()
    y = stream(x[1].float())
    assert y.dtype == torch.float32
    got = torch.autograd.grad(y.sum(), [h0, c0])
    same(got, want, "gradient of hx", tol=1e-5)
    stream.reset()
    same(stream.state, (h0.float(), c0.float()), "reset after the change")


def test_the_state_follows_the_layer_to_another_device() -> None:
    """layer.to('meta') mid-stream: the state and a reset's rows go there too, so steps and
    resets run on that device."""
    layer = make("lstm")
    stream = layer.stream(hx=initial_state(layer))
    with torch.no_grad():
        stream(sequence()[0])
        layer.to("meta")
        y = stream(torch.zeros(B, I, dtype=torch.float64, device="meta"))
        assert y.device.type == "meta"
        stream.reset(torch.tensor([True, False, True]))
        assert all(s.device.type == "meta" for s in stream.state)
        stream(torch.zeros(B, I, dtype=torch.float64, device="meta"))


def test_a_stream_begun_under_inference_mode_steps_and_resets_outside_it() -> None:
    """A stream made and stepped under torch.inference_mode goes on outside it (no_grad):
    compiled steps, reset(which) and reset(), with forward's values."""
    layer = make("lstm")
    x = sequence()
    hx = initial_state(layer)
    which = torch.tensor([True, False, True])
    with torch.no_grad():
        whole, _ = layer(x, hx)
        again, _ = layer(x[3:], hx)
    with torch.inference_mode():
        stream = layer.stream(hx=hx)
        ys = [stream(x[0])]
    with torch.no_grad():
        ys += [stream(x[1]), stream(x[2])]
        assert stream.last_engine == "fused"
        stream.reset(which)
        ys = torch.cat([torch.stack(ys), steps(stream, x[3:])])
        same(ys[:, 1], whole[:, 1], "kept sequence")
        same(ys[3:, [0, 2]], again[:, [0, 2]], "reset sequences")
        stream.reset()
        same(steps(stream, x), whole, "after a full reset")


def test_a_stream_begun_under_inference_mode_trains_outside_it() -> None:
    """A stream made under torch.inference_mode, then stepped with gradients, reset() and stepped
    again: no inference tensor reaches autograd; gradients are forward's."""
    layer = make("gru")
    x = sequence()
    params = list(layer.parameters())
    out, _ = layer(x[:2])
    want = torch.autograd.grad(out[1].sum(), params)
    with torch.inference_mode():
        stream = layer.stream(batch_size=B)
    stream(x[0])
    stream.reset()
    stream(x[0])
    y = stream(x[1])
    same(torch.autograd.grad(y.sum(), params), want, "gradients after the reset")


def test_reset_restores_hx_itself_also_after_leaving_inference_mode() -> None:
    """The initial state is hx's own tensors (not a copy), for a stream made under
    inference_mode too: after leaving it, reset() restores what hx holds now."""
    layer = make("gru")
    h0 = initial_state(layer)
    with torch.inference_mode():
        stream = layer.stream(hx=h0)
    with torch.no_grad():
        stream(sequence()[0])
        h0.mul_(-3.0)
        stream.reset()
    same(stream.state, h0, "reset() after hx was written")


# ---- traces ------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("batch", [B, 1, None], ids=["batched", "batch-of-one", "unbatched"])
def test_a_steps_trace_is_laid_out_as_forwards(batch_first: bool, batch) -> None:
    """Each step's Trace has forward's layout (batch_first, batched, unbatched) and its fields
    (mode, gate_names, batch_first, batched): concatenated over T it is forward's trace."""
    layer = make("lstm", batch_first=batch_first)
    x = sequence() if batch is None else sequence()[:, :batch]  # (T, B, I)
    if batch is None:
        x = x[:, 0]  # (T, I)
    with torch.no_grad():
        seq = x.transpose(0, 1) if batch_first and batch is not None else x
        _, _, want = layer(seq, return_trace=True)
        stream = layer.stream(batch_size=batch or 1)
        traces = [stream(x[t], return_trace=True)[1] for t in range(T)]
    axis = 3 if batch_first and batch is not None else 2  # the T axis
    for tr in traces:
        assert (tr.mode, tr.gate_names) == (want.mode, want.gate_names)
        assert (tr.batch_first, tr.batched) == (want.batch_first, want.batched)
    for name in want.gate_names:
        got = torch.cat([tr.gates[name] for tr in traces], dim=axis)
        same(got, want.gates[name], f"gate {name}")
    same(torch.cat([tr.hidden for tr in traces], dim=axis), want.hidden, "hidden")
    same(torch.cat([tr.cell for tr in traces], dim=axis), want.cell, "cell")


class _OptionGates(Cell):
    """A JANET-like cell whose traced gates depend on its options (as a cell's may)."""

    name = "OptionGates"
    state_names = ("h",)

    def layout(self, opts: CellOptions) -> tuple[str, ...]:
        return ("f", "g")

    def trace_gates(self, opts: CellOptions) -> tuple[str, ...]:
        return ("f", "g") if opts.nonlinearity == "tanh" else ("f",)

    def step(self, xp, hp, state, p: LayerParams, opts: CellOptions):
        pre = split(xp + hp, ("f", "g"))
        f, g = torch.sigmoid(pre["f"]), torch.tanh(pre["g"])
        return (f * state[0] + (1 - f) * g,), {"f": f, "g": g}


def test_a_cells_trace_gates_are_asked_with_the_layers_options() -> None:
    """The reference step names the traced gates by cell.trace_gates(layer.opts): a cell that
    reads its options streams with forward's trace."""
    register_cell(_OptionGates())
    try:
        torch.manual_seed(0)
        layer = lstmkit.nn.layer_class("optiongates")(I, H, 2, dtype=torch.float64).eval()
        x = sequence()
        with torch.no_grad():
            out, _, want = layer(x, return_trace=True)
            stream = layer.stream(batch_size=B)
            run = [stream(x[t], return_trace=True) for t in range(T)]
        same(torch.stack([y for y, _ in run]), out, "output")
        for name in want.gate_names:
            got = torch.cat([tr.gates[name] for _, tr in run], dim=2)
            same(got, want.gates[name], f"gate {name}")
    finally:
        registry.CELLS.pop("optiongates", None)
        layers.LAYERS.pop("optiongates", None)


# ---- the third run's survivors: which step runs, and why -----------------------------------------
# (constructor options, training, grad mode, the reason a stream gives, word for word: it is what
# last_engine_reason shows the user)
REASONS = {
    "fused": ({}, False, False, "the compiled step (weights laid out once, one call per step)"),
    "engine-reference": ({"engine": "reference"}, False, False, "engine='reference' was requested"),
    "gradients": (
        {},
        False,
        True,
        "the compiled step cannot run this: gradients are needed (use torch.no_grad() for the "
        "fast step)",
    ),
    "dropout-in-training": (
        {"recurrent_dropout": 0.5},
        True,
        False,
        "the compiled step cannot run this: dropout in training draws masks the compiled step "
        "does not",
    ),
}


@pytest.mark.parametrize("case", sorted(REASONS))
def test_a_streams_reason_is_its_documented_sentence(case: str) -> None:
    """last_engine_reason is the whole sentence, nothing added before or after it."""
    opts, training, grad, reason = REASONS[case]
    stream = make("lstm", **opts).train(training).stream(batch_size=B)
    with torch.set_grad_enabled(grad):
        stream(sequence()[0])
    assert stream.last_engine_reason == reason


def test_the_weights_are_laid_out_once_and_each_fused_step_is_one_compiled_call(
    monkeypatch,
) -> None:
    """'fused' is what its reason says: over T no_grad steps the weights are laid out once
    (CompiledStep.prepare) and each step is one call of the compiled step (CompiledStep.run),
    with forward's values; an in-place change of a weight (as an optimizer step) lays them out
    again, once."""
    from lstmkit.engines import stream_step

    prepared, ran = [], []
    prepare, run = stream_step.CompiledStep.prepare, stream_step.CompiledStep.run

    def counting_prepare(*args, **kwargs):
        prepared.append(1)
        return prepare(*args, **kwargs)

    def counting_run(self, x):
        ran.append(1)
        return run(self, x)

    monkeypatch.setattr(stream_step.CompiledStep, "prepare", staticmethod(counting_prepare))
    monkeypatch.setattr(stream_step.CompiledStep, "run", counting_run)
    layer = make("lstm")
    x = sequence()
    with torch.no_grad():
        want, state = layer(x[:4])
        stream = layer.stream(batch_size=B)
        same(steps(stream, x[:4]), want, "the first steps")
        assert stream.last_engine == "fused", stream.last_engine_reason
        assert (len(prepared), len(ran)) == (1, 4)
        layer.weight_hh_l1.mul_(0.5)  # the version counter moves: laid out again
        want, _ = layer(x[4:], state)
        same(steps(stream, x[4:]), want, "after the weight changed")
    assert (len(prepared), len(ran)) == (2, T)


@pytest.mark.parametrize("leaf", ["hx", "x"])
def test_a_frozen_layer_steps_with_gradients_to_hx_or_the_input(leaf: str) -> None:
    """No parameter requires grad, but hx (or the input) does: gradients are needed, so the
    reference step runs, and the gradients to hx (or x) are forward's over the same steps."""
    layer = make("lstm").requires_grad_(False)
    x = sequence()
    hx = initial_state(layer)
    leaves = list(hx) if leaf == "hx" else [x]
    for t in leaves:
        t.requires_grad_()
    out, _ = layer(x[:2], hx)
    want = torch.autograd.grad(out[1].sum(), leaves)
    stream = layer.stream(hx=hx)
    stream(x[0])
    y = stream(x[1])
    assert stream.last_engine == "reference"
    assert "gradients are needed" in stream.last_engine_reason
    same(torch.autograd.grad(y.sum(), leaves), want, f"gradient of {leaf}")


def test_after_detach_a_frozen_stream_runs_the_compiled_step_in_grad_mode() -> None:
    """A frozen layer, hx requiring grad: the first step needs gradients (the reference step);
    after stream.detach() nothing does, so the compiled step runs with grad mode on, with
    forward's values."""
    layer = make("lstm").requires_grad_(False)
    x = sequence()
    hx = tuple(s.requires_grad_() for s in initial_state(layer))
    with torch.no_grad():
        want, _ = layer(x, hx)
    stream = layer.stream(hx=hx)
    ys = [stream(x[0])]
    assert stream.last_engine == "reference"
    stream.detach()
    ys += [stream(x[t]) for t in range(1, T)]
    assert stream.last_engine == "fused", stream.last_engine_reason
    same(torch.stack(ys), want, "output")


def test_a_reassigned_parameter_viewing_the_old_storage_is_laid_out_again() -> None:
    """weight_hh_l0 replaced by a new Parameter that is the old one's transpose (a square RNN
    W_hh: same storage address, same version counter, same dtype): the stream sees the new
    parameter and steps as forward does with it."""
    torch.manual_seed(0)
    layer = lstmkit.RNN(I, H, 1, dtype=torch.float64).eval()
    x = sequence()
    with torch.no_grad():
        stream = layer.stream(batch_size=B)
        stream(x[0])
        old = layer.weight_hh_l0
        layer.weight_hh_l0 = torch.nn.Parameter(old.detach().t())
        assert layer.weight_hh_l0.data_ptr() == old.data_ptr()
        assert layer.weight_hh_l0._version == old._version
        want, _ = layer(x[1:], stream.state)
        same(steps(stream, x[1:]), want, "after the reassignment")


def test_an_unbatched_step_with_its_trace_returns_an_unbatched_output() -> None:
    """x (input_size,) with return_trace=True: y is (H_out,), forward's unbatched output."""
    layer = make("gru")
    x = sequence()[:, 0]  # (T, I)
    with torch.no_grad():
        want, _ = layer(x)  # (T, H)
        stream = layer.stream()
        got = torch.stack([stream(x[t], return_trace=True)[0] for t in range(T)])
    same(got, want, "unbatched output")


def test_a_step_in_another_dtype_is_refused_naming_the_input() -> None:
    """A float32 step on a float64 stream: ValueError whose message names the tensor 'input'."""
    stream = make("lstm").stream(batch_size=B)
    with pytest.raises(
        ValueError,
        match=r"^input dtype \(torch.float32\) does not match weight dtype \(torch.float64\)\. "
        r"Convert it: input\.to\(torch.float64\)",
    ):
        stream(sequence(dtype=torch.float32)[0])


def test_weight_drop_in_a_one_layer_stream() -> None:
    """Weight drop in training on a one-layer stream: the mask is drawn as one forward draws it
    (same seed), so the steps are the training forward's."""
    layer = make("lstm", num_layers=1, weight_drop=0.5).train()
    x = sequence()
    with torch.no_grad():
        torch.manual_seed(11)
        want, _ = layer(x)
        stream = layer.stream(batch_size=B)
        torch.manual_seed(11)
        same(steps(stream, x), want, "one layer, weight drop")


def test_a_permuted_hx_streams_as_forward() -> None:
    """hx whose (B, H) slices are column-major (a transposed tensor): the compiled step's
    buffers are contiguous copies, so the steps are forward's."""
    layer = make("gru")
    x = sequence()
    gen = torch.Generator().manual_seed(1)
    h0 = torch.randn(2, H, B, generator=gen, dtype=torch.float64).transpose(1, 2)  # (L, B, H)
    assert not h0[0].is_contiguous()
    with torch.no_grad():
        want, h_n = layer(x, h0)
        stream = layer.stream(hx=h0)
        same(steps(stream, x), want, "output")
    assert stream.last_engine == "fused"
    same(stream.state, h_n, "final state")


def test_a_steps_trace_converts_with_keyword_arguments() -> None:
    """Trace.to(dtype=...) converts every tensor (gates, hidden, cell), as Tensor.to does."""
    stream = make("lstm").stream(batch_size=B)
    with torch.no_grad():
        _, trace = stream(sequence()[0], return_trace=True)
    narrow = trace.to(dtype=torch.float32)
    for name in trace.gate_names:
        same(narrow.gates[name], trace.gates[name].float(), f"gate {name}", tol=0.0)
    same(narrow.hidden, trace.hidden.float(), "hidden", tol=0.0)
    same(narrow.cell, trace.cell.float(), "cell", tol=0.0)


def test_a_packed_sequences_bad_batch_sizes_are_described_in_the_error() -> None:
    """int32 batch_sizes (PackedSequence wants int64) are refused, the message describing the
    tensor: '1-D torch.int32 of 2 elements [2, 1]; ' (all of it: nothing left out)."""
    from torch.nn.utils.rnn import PackedSequence

    layer = make("lstm")
    packed = PackedSequence(torch.zeros(3, I, dtype=torch.float64), torch.tensor([2, 1]).int())
    with pytest.raises(ValueError, match=r"got 1-D torch\.int32 of 2 elements \[2, 1\]; build"):
        layer(packed)
