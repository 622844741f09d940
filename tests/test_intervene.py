"""Causal interventions (lstmkit.intervene): ablation and activation patching, checked against
hand-written loops over torch.nn cells in float64, with gradients, on both engines that apply
them (the fused engine against the reference one, option by option: test_intervene_fused.py)."""

from __future__ import annotations

import pytest
import torch

import lstmkit
from lstmkit import Intervention
from lstmkit.intervene import Edit

F64 = torch.float64
TOL = 1e-10
ENGINES = ["reference", "fused"]


def lstm_and_cells(num_layers=2, hidden=5, inp=3, engine="reference"):
    """An lstmkit.LSTM and torch.nn.LSTMCell twins holding its weights, float64."""
    layer = lstmkit.LSTM(inp, hidden, num_layers, engine=engine).to(F64)
    cells = []
    for k in range(num_layers):
        cell = torch.nn.LSTMCell(inp if k == 0 else hidden, hidden).to(F64)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(layer, f"{name}_l{k}"))
        cells.append(cell)
    return layer, cells


def hand_loop(cells, x, edit=None):
    """torch.nn.LSTMCell step by step; edit(layer, t, h, c) -> (h, c) after each step."""
    T, B, _ = x.shape
    states = [(x.new_zeros(B, c.hidden_size), x.new_zeros(B, c.hidden_size)) for c in cells]
    outs = []
    for t in range(T):
        inp = x[t]
        for k, cell in enumerate(cells):
            h, c = cell(inp, states[k])
            if edit is not None:
                h, c = edit(k, t, h, c)
            states[k] = (h, c)
            inp = h
        outs.append(inp)
    return torch.stack(outs), states


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_ablation_of_every_unit_equals_zeroing_by_hand(engine):
    layer, cells = lstm_and_cells(engine=engine)
    x = torch.randn(6, 4, 3, dtype=F64)
    ablate = Intervention.ablate(layer=0, state="h") + Intervention.ablate(layer=0, state="c")
    ablate = ablate + Intervention.ablate(layer=1, state="c")
    out, (h, c) = layer(x, intervention=ablate)

    def zero(k, t, h, c):
        return (torch.zeros_like(h) if k == 0 else h), torch.zeros_like(c)

    want, states = hand_loop(cells, x, zero)
    assert (out - want).abs().max() < TOL
    assert (h[1] - states[1][0]).abs().max() < TOL and c.abs().max() == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_ablating_some_units_at_some_steps_to_a_value(engine):
    layer, cells = lstm_and_cells(engine=engine)
    x = torch.randn(7, 2, 3, dtype=F64)
    units, steps = [1, 3], [2, 5]
    edit = Intervention.ablate(layer=1, units=units, state="c", steps=steps, value=0.7)
    out, _ = layer(x, intervention=edit)

    def fix(k, t, h, c):
        if k == 1 and t in steps:
            c = c.clone()
            c[:, units] = 0.7
        return h, c

    want, _ = hand_loop(cells, x, fix)
    assert (out - want).abs().max() < TOL
    assert (out - layer(x)[0]).abs()[:2].max() == 0  # nothing changes before the first edit
    assert (out - layer(x)[0]).abs()[3:].max() > 1e-3  # and the edit does change later steps


@pytest.mark.parametrize("engine", ENGINES)
def test_patching_a_state_from_input_a_equals_running_b_from_as_state(engine):
    """Patch every state of input A at step t into input B: B's outputs after t are those of a
    run of B[t+1:] started from A's states at t."""
    layer, _ = lstm_and_cells(engine=engine)
    xa, xb = torch.randn(8, 3, 3, dtype=F64), torch.randn(8, 3, 3, dtype=F64)
    t = 4
    _, _, trace_a = layer(xa, return_trace=True)
    patch = Intervention.patch(trace_a, layer=0, steps=[t]) + Intervention.patch(
        trace_a, layer=1, steps=[t]
    )
    out, (h, c) = layer(xb, intervention=patch)
    h0 = trace_a.hidden[:, 0, t]  # (L, B, H)
    c0 = trace_a.cell[:, 0, t]
    rest, (h_rest, c_rest) = layer(xb[t + 1 :], (h0, c0))
    assert (out[t + 1 :] - rest).abs().max() < TOL
    assert (h - h_rest).abs().max() < TOL and (c - c_rest).abs().max() < TOL
    assert (out[t] - trace_a.hidden[1, 0, t]).abs().max() < TOL  # step t itself shows A's h


@pytest.mark.parametrize("engine", ENGINES)
def test_gradients_through_an_ablation_and_into_a_patch(engine):
    layer, cells = lstm_and_cells(num_layers=1, engine=engine)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    value = torch.randn(5, 2, 2, dtype=F64, requires_grad=True)  # (T, B, U) patched values
    edit = Intervention((Edit(layer=0, state="h", units=[0, 4], steps=[1, 2], value=value),))
    out, _ = layer(x, intervention=edit)
    out.square().sum().backward()

    x2 = x.detach().clone().requires_grad_(True)
    v2 = value.detach().clone().requires_grad_(True)

    def put(k, t, h, c):
        if t in (1, 2):
            h = h.clone()
            h[:, [0, 4]] = v2[t]
        return h, c

    want, _ = hand_loop(cells, x2, put)
    want.square().sum().backward()
    assert (x.grad - x2.grad).abs().max() < TOL
    assert (value.grad - v2.grad).abs().max() < TOL
    assert value.grad[[0, 3, 4]].abs().max() == 0  # steps that were not edited get no gradient
    assert value.grad[1:3].abs().min() > 0


@pytest.mark.parametrize("engine", ENGINES)
def test_edits_skip_steps_past_a_sequences_length(engine):
    layer, _ = lstm_and_cells(num_layers=1, engine=engine)
    x = torch.randn(6, 2, 3, dtype=F64)
    lengths = torch.tensor([6, 3])
    edit = Intervention.ablate(layer=0, state="h", steps=[4], value=5.0)
    out, (h, _) = layer(x, lengths=lengths, intervention=edit)
    plain, (h_plain, _) = layer(x, lengths=lengths)
    assert (out[:, 1] - plain[:, 1]).abs().max() == 0  # sequence 1 ended at step 3
    assert (h[0, 1] - h_plain[0, 1]).abs().max() == 0
    assert (out[4, 0] - 5.0).abs().max() == 0


def test_engines_without_interventions_refuse_and_auto_falls_back():
    """torch's own kernels cannot edit a state: native refuses, and auto passes over it to the
    fused engine, the first capable one in priority order."""
    layer = lstmkit.LSTM(3, 4, engine="native")
    x = torch.randn(5, 2, 3)
    edit = Intervention.ablate(layer=0, units=[1])
    with pytest.raises(ValueError, match="interventions"):
        layer(x, intervention=edit)
    layer.engine = "auto"
    layer(x, intervention=edit)
    assert layer.last_engine == "fused"
    assert "'native' cannot: interventions" in layer.last_engine_reason


@pytest.mark.parametrize(
    "edit, match",
    [
        (Intervention.ablate(layer=2), "this stack has 2 layers"),
        (Intervention.ablate(layer=0, state="z"), "has \\('h', 'c'\\)"),
        (Intervention.ablate(layer=0, units=[9]), "unit 9 is out of range"),
        (Intervention.ablate(layer=0, steps=[7]), "step 7 is out of range"),
        (Intervention.ablate(layer=0, direction=1), "direction"),
        (Intervention((Edit(0, value=torch.zeros(3, 2, 5)),)), "recorded values \\(T, B, U\\)"),
        (Intervention((Edit(0, units=[0, 1], value=torch.zeros(3, 2)),)), "broadcastable to"),
        (Intervention.ablate(layer=0, units=[1, -4]), "unit\\(s\\) \\[1\\] listed more than once"),
        (Intervention.ablate(layer=0, value=float("inf")), "not finite"),
        (Intervention.ablate(layer=0, value=float("nan")), "not finite"),
    ],
)
def test_bad_edits_say_what_is_wrong(edit, match):
    layer, _ = lstm_and_cells()
    with pytest.raises(ValueError, match=match):
        layer(torch.randn(5, 2, 3, dtype=F64), intervention=edit)


def test_gru_and_a_language_model_take_interventions():
    gru = lstmkit.GRU(3, 4, engine="reference").to(F64)
    x = torch.randn(4, 2, 3, dtype=F64)
    out, _ = gru(x, intervention=Intervention.ablate(layer=0, units=[2]))
    assert out[:, :, 2].abs().max() == 0
    with pytest.raises(ValueError, match="has \\('h',\\)"):
        gru(x, intervention=Intervention.ablate(layer=0, state="c"))
    from lstmkit.training.model import LanguageModel, ModelConfig

    lm = LanguageModel(ModelConfig(vocab_size=7, emb_size=4, hidden_size=4, num_layers=1))
    tokens = torch.randint(0, 7, (5, 2))
    edited, _ = lm(tokens, intervention=Intervention.ablate(layer=0, state="c"))
    assert not torch.equal(edited, lm(tokens)[0])


def test_the_agreement_scorer_and_cli_take_an_ablation(tmp_path, capsys):
    """Ablating every unit of the LM's only layer leaves the decoder's bias alone: every item
    then gets the same margin, whatever its prefix; the CLI prints both accuracies."""
    import json

    from lstmkit.agreement import PrefixItem, score_prefix_items
    from lstmkit.cli.main import main
    from lstmkit.data.vocab import Vocab
    from lstmkit.training.checkpoint import save_checkpoint
    from lstmkit.training.model import LanguageModel, ModelConfig

    vocab = Vocab(["<unk>", "<eos>", "the", "cat", "cats", "is", "are"])
    cfg = ModelConfig(vocab_size=len(vocab), emb_size=4, hidden_size=4, num_layers=1)
    lm = LanguageModel(cfg)
    items = [
        PrefixItem(["the", "cat"], ["is"], ["are"], distance=0),
        PrefixItem(["the", "cats", "the"], ["are"], ["is"], distance=1),
    ]
    everything = Intervention.ablate(layer=0, state="h") + Intervention.ablate(layer=0, state="c")
    ablated = score_prefix_items(lm, vocab, items, intervention=everything)
    bias = torch.log_softmax(lm.decoder.bias.detach(), 0)
    s = vocab.stoi
    want = [float(bias[s["is"]] - bias[s["are"]]), float(bias[s["are"]] - bias[s["is"]])]
    assert [r["margin"] for r in ablated.results] == pytest.approx(want, abs=1e-6)
    plain = score_prefix_items(lm, vocab, items)
    assert [r["margin"] for r in plain.results] != pytest.approx(want, abs=1e-6)

    save_checkpoint(tmp_path / "ck", lm, cfg, vocab, data={"level": "word"})
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps({"simple": [["the cat is", "the cat are"]]}))
    argv = ["agreement", "eval", str(tmp_path / "ck"), "--format", "marvin", "--data", str(data)]
    assert main([*argv, "--ablate", "0:h:all", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "without" in out and "ablated: 0:h:all" in out
    assert "ablated" in json.loads((tmp_path / "r.json").read_text())
    assert main([*argv, "--ablate", "0:h:99"]) == 1
    assert "unit 99 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize(
    "units, kind",
    [([0.5], "float"), ([torch.tensor(1.0)], "Tensor"), ("ab", "str"), ([True], "bool")],
)
def test_units_of_the_wrong_type_say_so(units, kind):
    layer, _ = lstm_and_cells()
    with pytest.raises(TypeError, match=f"units must be ints, a slice or None.*got {kind}"):
        layer(torch.randn(5, 2, 3, dtype=F64), intervention=Intervention.ablate(0, units=units))


def test_units_and_steps_take_one_int_numpy_ints_and_integer_tensors():
    import numpy as np

    layer, _ = lstm_and_cells()
    x = torch.randn(5, 2, 3, dtype=F64)
    want, _ = layer(x, intervention=Intervention.ablate(0, units=[1], steps=[2], value=0.5))
    for units, steps in [(1, 2), ([np.int64(1)], [np.int32(2)]), (torch.tensor([1]), [2])]:
        got, _ = layer(x, intervention=Intervention.ablate(0, units=units, steps=steps, value=0.5))
        assert torch.equal(got, want)
    got, _ = layer(
        x, intervention=Intervention.ablate(0, units=[1], steps=[2], value=np.float32(0.5))
    )
    assert torch.equal(got, want)


@pytest.mark.parametrize("engine", ["native", "fused"])
def test_an_intervention_that_edits_nothing_runs_on_any_engine(engine):
    layer = lstmkit.LSTM(3, 4, engine=engine)
    x = torch.randn(5, 2, 3)
    assert torch.equal(layer(x, intervention=Intervention(()))[0], layer(x)[0])


def test_a_value_on_another_device_is_refused():
    layer, _ = lstm_and_cells(engine="fused")
    value = torch.zeros(2, 1, device="meta")
    edit = Intervention((Edit(0, units=[1], value=value),))
    with pytest.raises(ValueError, match="the value is on meta, the input on cpu"):
        layer(torch.randn(5, 2, 3, dtype=F64), intervention=edit)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_huge_cell_value_meets_a_saturated_gate_as_in_torch(engine):
    """c set to 1e300 drives the peephole forget gate to exactly 0, as torch.sigmoid gives it
    (the compiled loops once gave 1e-308 there: times 1e300, not negligible)."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(3, 4, 2, peephole=True, engine="reference").to(F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    edit = Intervention.ablate(0, units=[1], state="c", steps=[1], value=1e300)
    want, (_, c_want) = layer(x, intervention=edit)
    layer.engine = engine
    got, (_, c_got) = layer(x, intervention=edit)
    assert (got - want).abs().max() < TOL and (c_got - c_want).abs().max() < TOL


@pytest.mark.parametrize("engine", ENGINES)
def test_vmap_over_patched_values(engine):
    """torch.func.vmap over a batch of patched values: the dense values are built out of place."""
    layer, _ = lstm_and_cells(num_layers=1, engine=engine)
    x = torch.randn(4, 2, 3, dtype=F64)
    values = torch.randn(3, 4, 2, 1, dtype=F64)  # 3 patches, each (T, B, U)

    def last_output(value):
        edit = Intervention((Edit(0, units=[2], steps=[1], value=value),))
        return layer(x, intervention=edit)[0][-1]

    batched = torch.func.vmap(last_output)(values)
    for k in range(3):
        assert (batched[k] - last_output(values[k])).abs().max() < TOL


def test_patching_a_gru_takes_its_one_state():
    """A GRU's trace has no cell: patch() edits h only, and B continues from A's h."""
    torch.manual_seed(0)
    gru = lstmkit.GRU(3, 4, engine="fused").to(F64)
    xa, xb = torch.randn(6, 2, 3, dtype=F64), torch.randn(6, 2, 3, dtype=F64)
    _, _, trace_a = gru(xa, return_trace=True)
    patch = Intervention.patch(trace_a, layer=0, steps=[2])
    assert [e.state for e in patch.edits] == ["h"]
    out, _ = gru(xb, intervention=patch)
    rest, _ = gru(xb[3:], trace_a.hidden[:, 0, 2])
    assert (out[3:] - rest).abs().max() < TOL
    # the cell named first is skipped, and h after it still patched
    patch = Intervention.patch(trace_a, layer=0, states=("c", "h"), steps=[2])
    assert [e.state for e in patch.edits] == ["h"]


def test_patching_some_units_puts_in_only_those():
    """patch(units=[1, 3]): those units of h and c take A's values at step t, the others keep
    B's own; the same as an edit written by hand with A's recorded columns."""
    layer, _ = lstm_and_cells(num_layers=1, engine="fused")
    xa, xb = torch.randn(5, 2, 3, dtype=F64), torch.randn(5, 2, 3, dtype=F64)
    _, _, trace_a = layer(xa, return_trace=True)
    out, _, trace = layer(
        xb, intervention=Intervention.patch(trace_a, layer=0, units=[1, 3], steps=[2]),
        return_trace=True,
    )  # fmt: skip
    _, _, plain = layer(xb, return_trace=True)
    for got, a, b in (
        (trace.hidden, trace_a.hidden, plain.hidden),
        (trace.cell, trace_a.cell, plain.cell),
    ):
        assert torch.equal(got[0, 0, 2][:, [1, 3]], a[0, 0, 2][:, [1, 3]])
        assert torch.equal(got[0, 0, 2][:, [0, 2, 4]], b[0, 0, 2][:, [0, 2, 4]])
    assert torch.equal(out[:2], plain.hidden[0, 0, :2])  # nothing changes before step 2
    with pytest.raises(ValueError, match="unit 9 is out of range: there are 5 units"):
        Intervention.patch(trace_a, layer=0, units=[9])


@pytest.mark.parametrize("engine", ENGINES)
def test_patching_the_reverse_direction_with_its_own_states_changes_nothing(engine):
    """A bidirectional run patched at direction 1 with the states it recorded there is the
    same run; patching direction 1 from another input changes direction 1 only where the
    reverse direction has not yet passed (steps before t) and leaves direction 0 alone."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(3, 4, bidirectional=True, engine=engine).to(F64)
    xa, xb = torch.randn(6, 2, 3, dtype=F64), torch.randn(6, 2, 3, dtype=F64)
    plain, _, trace_b = layer(xb, return_trace=True)
    same, _ = layer(xb, intervention=Intervention.patch(trace_b, layer=0, steps=[3], direction=1))
    assert (same - plain).abs().max() < TOL
    _, _, trace_a = layer(xa, return_trace=True)
    out, _ = layer(xb, intervention=Intervention.patch(trace_a, layer=0, steps=[3], direction=1))
    assert torch.equal(out[..., :4], plain[..., :4])  # the forward direction is untouched
    assert torch.equal(out[4:, :, 4:], plain[4:, :, 4:])  # direction 1 ran t = 5, 4 before it
    assert (out[3, :, 4:] - trace_a.hidden[0, 1, 3]).abs().max() < TOL
    assert (out[:3, :, 4:] - plain[:3, :, 4:]).abs().max() > 1e-3


def test_a_traces_states_default_to_the_last_layer_and_the_forward_direction():
    torch.manual_seed(0)
    layer = lstmkit.LSTM(3, 4, 2, bidirectional=True).to(F64)
    _, _, trace = layer(torch.randn(5, 2, 3, dtype=F64), return_trace=True)
    states = trace.states()
    assert torch.equal(states["h"], trace.hidden[1, 0]) and torch.equal(
        states["c"], trace.cell[1, 0]
    )
    assert not torch.equal(states["h"], trace.states(1, 1)["h"])


def test_dense_edits_are_made_on_the_inputs_device():
    """dense() builds every mask, index and value on the run's device (the meta device stands
    in for a GPU: a tensor left on the CPU meets a meta one and raises, or keeps its device)."""
    from lstmkit.intervene import BoundEdit, dense

    like = torch.empty(4, 2, 3, device="meta")
    recorded = torch.empty(4, 2, 1, device="meta")
    edits = [
        BoundEdit(0, torch.tensor([1, 2]), {1, 3}, 0.5),
        BoundEdit(0, torch.tensor([0]), {2}, recorded),
    ]
    for valid in (None, torch.ones(4, 2, 1, dtype=torch.bool, device="meta")):
        h, c = dense(edits, 4, 2, (5, 5), like, valid)
        assert c is None
        assert h.mask.device.type == "meta" and h.value.device.type == "meta"
        assert (
            h.mask.shape == (4, 2, 5) and h.mask.dtype == torch.bool and h.value.shape == (4, 2, 5)
        )


def test_two_edits_of_one_state_both_apply_and_the_later_wins_where_they_meet():
    """Edits of different units of one state both take effect; on a unit and step that both
    edit, the later value is the one in the state."""
    layer, cells = lstm_and_cells(num_layers=1)
    x = torch.randn(5, 2, 3, dtype=F64)
    edit = Intervention.ablate(0, units=[0, 1], state="c", steps=[1, 2], value=0.25)
    edit += Intervention.ablate(0, units=[1, 3], state="c", steps=[2], value=-0.5)
    out, _ = layer(x, intervention=edit)

    def by_hand(k, t, h, c):
        c = c.clone()
        if t in (1, 2):
            c[:, [0, 1]] = 0.25
        if t == 2:
            c[:, [1, 3]] = -0.5
        return h, c

    want, _ = hand_loop(cells, x, by_hand)
    assert (out - want).abs().max() < TOL


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bidirectional_stack_ablates_the_direction_and_layer_named(engine):
    """ablate(direction=1) edits the reverse direction only, in the layer named (layer 1 of a
    2-layer bidirectional stack: its edits are keyed layer * 2 + direction)."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(3, 4, 2, bidirectional=True, engine=engine).to(F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    plain, _ = layer(x)
    for k in (0, 1):
        out, _ = layer(x, intervention=Intervention.ablate(layer=1, units=[2], direction=k))
        mine, other = slice(4 * k, 4 * k + 4), slice(4 * (1 - k), 4 * (1 - k) + 4)  # of (T, B, 2H)
        assert torch.equal(out[..., 4 * k + 2], torch.zeros(5, 2, dtype=F64))
        assert not torch.equal(out[..., mine], plain[..., mine])  # its other units change
        assert torch.equal(out[..., other], plain[..., other])  # the other direction does not


def test_negative_layers_and_units_count_from_the_end_to_the_first():
    layer, _ = lstm_and_cells()  # 2 layers, 5 units
    x = torch.randn(5, 2, 3, dtype=F64)
    want, _ = layer(x, intervention=Intervention.ablate(layer=0, units=[0], value=0.5))
    got, _ = layer(x, intervention=Intervention.ablate(layer=-2, units=[-5], value=0.5))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="unit 5 is out of range: there are 5 units"):
        layer(x, intervention=Intervention.ablate(layer=0, units=[5]))
    with pytest.raises(ValueError, match="unit -6 is out of range"):
        layer(x, intervention=Intervention.ablate(layer=0, units=[-6]))
    with pytest.raises(ValueError, match="this stack has 2 layers"):
        layer(x, intervention=Intervention.ablate(layer=-3))


def test_value_tensors_broadcast_over_the_batch_and_the_steps():
    """A (B, U) or (U,) tensor value is the same at every edited step: equal to the numbers."""
    layer, _ = lstm_and_cells(num_layers=1)
    x = torch.randn(5, 2, 3, dtype=F64)
    want, _ = layer(x, intervention=Intervention.ablate(0, units=[1], steps=[1, 3], value=0.5)
                    + Intervention.ablate(0, units=[4], steps=[1, 3], value=-1.0))  # fmt: skip
    for value in (torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([[0.5, -1.0]] * 2, dtype=F64)):
        got, _ = layer(
            x, intervention=Intervention((Edit(0, units=[1, 4], steps=[1, 3], value=value),))
        )
        assert torch.equal(got, want)


def test_an_edit_of_no_units_or_no_steps_changes_nothing():
    layer, _ = lstm_and_cells(engine="fused")
    x = torch.randn(5, 2, 3, dtype=F64)
    plain, _ = layer(x)
    for edit in (
        Intervention.ablate(0, units=[]),
        Intervention.ablate(0, steps=[]),
        Intervention.ablate(1, steps=slice(9, 9)),
    ):
        assert torch.equal(layer(x, intervention=edit)[0], plain)


@pytest.mark.parametrize("value", ["0.5", True, None, [0.5]])
def test_a_value_that_is_not_a_number_or_a_tensor_is_refused(value):
    layer, _ = lstm_and_cells()
    with pytest.raises(TypeError, match="edit value must be a number or a tensor"):
        layer(torch.randn(5, 2, 3, dtype=F64), intervention=Intervention((Edit(0, value=value),)))


def test_messages_name_the_first_eight_units_and_only_the_repeated_ones():
    layer, _ = lstm_and_cells(hidden=12)
    x = torch.randn(5, 2, 12 - 9, dtype=F64)
    bad = Intervention((Edit(0, units=list(range(10)), value=torch.zeros(3, 10)),))
    with pytest.raises(ValueError, match=r"^edit of h units \[0, 1, 2, 3, 4, 5, 6, 7\]: a value"):
        layer(x, intervention=bad)
    with pytest.raises(ValueError, match=r"unit\(s\) \[1, 3\] listed more than once"):
        layer(x, intervention=Intervention.ablate(0, units=[0, 1, 3, 1, -9, 5]))


@pytest.mark.parametrize("layout", ["batch_first", "unbatched"])
def test_patching_from_a_batch_first_or_unbatched_trace(layout):
    """A Trace in the caller's layout ((B, T, H) with batch_first, (T, H) unbatched) patches the
    same states as the time-major run: B continues from A's state at step t."""
    torch.manual_seed(0)
    batch_first = layout == "batch_first"
    layer = lstmkit.LSTM(3, 4, batch_first=batch_first, engine="fused").to(F64)
    shape = (2, 6, 3) if batch_first else (6, 3)
    xa, xb = torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)
    _, _, trace_a = layer(xa, return_trace=True)
    out, _ = layer(xb, intervention=Intervention.patch(trace_a, layer=0, steps=[2]))
    states = trace_a.states(0)
    h, c = (
        (states["h"][:, 2], states["c"][:, 2]) if batch_first else (states["h"][2], states["c"][2])
    )
    rest, _ = layer(xb[:, 3:] if batch_first else xb[3:], (h[None], c[None]))
    assert (out[:, 3:] - rest if batch_first else out[3:] - rest).abs().max() < TOL
