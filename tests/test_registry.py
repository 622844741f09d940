"""Adding a cell is adding a file: a cell defined outside the package (tests/fixtures/janet_cell.py)
runs through the layers, engines, traces, training model and tasks, and engines that do not know
it refuse it with a reason instead of computing another cell."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import lstmkit
from lstmkit.cells import registry
from lstmkit.nn import layers

FIXTURE = Path(__file__).parent / "fixtures" / "janet_cell.py"


@pytest.fixture
def janet():
    spec = importlib.util.spec_from_file_location("janet_cell", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module.JANET
    registry.CELLS.pop("janet", None)  # other tests see the built-in cells only
    layers.LAYERS.pop("janet", None)


def _by_hand(layer, x: torch.Tensor) -> torch.Tensor:
    """JANET's equations written out, with the layer's own weights."""
    H = layer.hidden_size
    h = torch.zeros(x.shape[1], H, dtype=x.dtype)
    out = []
    for t in range(x.shape[0]):
        pre = x[t] @ layer.weight_ih_l0.T + layer.bias_ih_l0 + h @ layer.weight_hh_l0.T
        pre = pre + layer.bias_hh_l0
        f, g = torch.sigmoid(pre[:, :H]), torch.tanh(pre[:, H:])
        h = f * h + (1 - f) * g
        out.append(h)
    return torch.stack(out)


def test_a_new_cell_runs_on_the_reference_engine_and_matches_its_equations(janet) -> None:
    assert "janet" in lstmkit.cells.cell_names()
    layer = lstmkit.nn.layer_class("janet")(5, 8, dtype=torch.float64, forget_bias=1.0)
    assert layer.weight_ih_l0.shape == (16, 5)  # two blocks: f, g
    assert torch.all(layer.bias_ih_l0[:8] == 1.0)  # the forget bias found f in the layout
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    out, h_n, trace = layer(x, return_trace=True)
    assert layer.last_engine == "reference"
    assert "torch has no kernel for the JANET cell" in layer.last_engine_reason
    assert "no fused kernel for the JANET cell" in layer.last_engine_reason
    torch.testing.assert_close(out, _by_hand(layer, x), atol=1e-12, rtol=0)
    torch.testing.assert_close(h_n[0], out[-1])
    assert trace.gate_names == ("f", "g") and trace.gates["f"].shape == (1, 1, 7, 3, 8)
    out.sum().backward()
    assert layer.weight_hh_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("engine", ["native", "fused"])
def test_engines_that_do_not_know_a_cell_refuse_it(janet, engine: str) -> None:
    layer = lstmkit.nn.layer_class("janet")(5, 8, engine=engine)
    with pytest.raises(ValueError, match="JANET"):
        layer(torch.randn(4, 2, 5))


def test_the_applications_take_the_cell_from_the_registry(janet) -> None:
    from lstmkit.tasks.definitions import make_task
    from lstmkit.tasks.train import TaskModel
    from lstmkit.training.model import LanguageModel, ModelConfig

    lm = LanguageModel(ModelConfig(vocab_size=11, emb_size=6, hidden_size=6, cell="janet"))
    logits = lm(torch.randint(0, 11, (5, 2)))[0]
    assert logits.shape == (5, 2, 11) and lm.rnn.cell is janet
    task = make_task("adding", lag=30)
    model = TaskModel(task, "janet", hidden_size=6)
    assert model.rnn.cell is janet


def test_registering_badly_says_what_is_wrong(janet) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register_cell(type(janet)())
    with pytest.raises(ValueError, match="unknown cell 'nope'"):
        lstmkit.nn.layer_class("nope")
    with pytest.raises(ValueError, match="has no such option"):
        lstmkit.nn.layer_class("janet")(5, 8, peephole=True)


def test_copies_and_pickles_keep_the_registered_cell() -> None:
    """Engines key their tables by the cell object: a deep copy (EMA, benchmarks), a pickle or
    torch.save of a whole layer must keep it, or the copy would fall back to the reference."""
    import copy
    import io
    import pickle

    layer = lstmkit.LSTM(3, 4, layer_norm=True)
    x = torch.randn(5, 2, 3)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    copies = [copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))]
    copies.append(torch.load(buffer, weights_only=False))
    for other in copies:
        assert other.spec.cell is lstmkit.LSTM.cell
        torch.testing.assert_close(other(x)[0], layer(x)[0], atol=0, rtol=0)
        assert other.last_engine == "fused", other.last_engine_reason


@pytest.mark.parametrize("missing", ["name", "state_names"])
def test_a_cell_without_a_name_or_states_is_refused(missing: str) -> None:
    from lstmkit.cells.base import Cell

    attrs = {"name": "Nameless", "state_names": ("h",)}
    del attrs[missing]
    methods = {m: lambda self, *a: () for m in ("layout", "trace_gates", "step")}
    cell = type("Incomplete", (Cell,), {**attrs, **methods})()
    with pytest.raises(ValueError, match=f"non-empty class attribute '{missing}'"):
        registry.register_cell(cell)
    assert "nameless" not in registry.cell_names()
