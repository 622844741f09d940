"""lstmkit under PyTorch's tools (torch.compile, torch.export, torch.func, autocast, jit.trace,
ONNX): every case either gives eager PyTorch's result or is refused with a reason, never a
silent wrong result (benchmarks/interop.py runs the cases and writes docs/interop-table.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from fused_helpers import one_thread  # noqa: F401  (autouse fixture: 1 torch thread)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "interop.py"
_spec = importlib.util.spec_from_file_location("bench_interop", SCRIPT)
interop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(interop)

# Exported as ONNX's own operators by engine="auto": any batch size and sequence length.
ONNX_OPERATORS = ["LSTM", "LSTM peephole", "LSTM coupled", "LSTM 2 layers bidir", "GRU", "RNN relu"]
ONNX_OPERATORS.append("LSTM peephole coupled 2x bidir")
FAST_TOOLS = [t for t, (_, slow) in interop.TOOLS.items() if not slow]
SLOW_TOOLS = [t for t, (_, slow) in interop.TOOLS.items() if slow]


def _expect_works_or_known(result: str, tool: str, option: str, engine: str) -> None:
    assert not result.startswith("FAILS"), f"{tool} / {option} / {engine}: {result}"


@pytest.mark.parametrize("option", list(interop.OPTIONS))
@pytest.mark.parametrize("tool", FAST_TOOLS)
@pytest.mark.parametrize("engine", ["auto", "fused"])
def test_default_engines_work(tool: str, option: str, engine: str) -> None:
    """auto and the fused engine: every fast tool works on every option (the fused engine is
    refused by the ONNX exporter, with a reason; auto then exports through native / reference)."""
    result = interop.check(tool, option, engine)
    if engine == "fused" and tool.startswith("onnx"):
        assert result.startswith("refused: ") and "no ONNX form" in result, result
    elif tool.startswith("onnx") and option in ONNX_OPERATORS:  # ONNX's own LSTM / GRU / RNN
        assert result == "works", f"{tool} / {option}: {result}"
    else:
        assert result.startswith("works"), f"{tool} / {option} / {engine}: {result}"


@pytest.mark.parametrize("option", ["LSTM", "LSTM layer_norm", "GRU"])
@pytest.mark.parametrize("tool", FAST_TOOLS)
@pytest.mark.parametrize("engine", ["native", "reference"])
def test_other_engines_never_fail_silently(tool: str, option: str, engine: str) -> None:
    _expect_works_or_known(interop.check(tool, option, engine), tool, option, engine)


@pytest.mark.slow
@pytest.mark.parametrize("option", list(interop.OPTIONS))
@pytest.mark.parametrize("tool", SLOW_TOOLS)
@pytest.mark.parametrize("engine", interop.ENGINES)
def test_slow_grid(tool: str, option: str, engine: str) -> None:
    """torch.compile (inductor) and the dynamo ONNX exporter on every engine and option."""
    result = interop.check(tool, option, engine)
    if engine == "fused" and tool.startswith("onnx"):
        assert result.startswith("refused: "), result  # its operators have no ONNX form
    elif engine in ("auto", "fused"):
        assert result.startswith("works"), f"{tool} / {option} / {engine}: {result}"
    _expect_works_or_known(result, tool, option, engine)


def test_a_wrong_result_is_reported_as_a_failure(monkeypatch) -> None:
    """The checker itself: a tool that returns a different result is a FAILS, not a 'works'."""

    def wrong(model, x):
        interop._close(model(x) + 1e-3, model(x))

    monkeypatch.setitem(interop.TOOLS, "wrong", (wrong, False))
    assert interop.check("wrong", "LSTM", "auto").startswith("FAILS: AssertionError: wrong result")


# The interpreter is slow (jacrev runs the backward once per output element): two options and
# no jacrev in the default suite, the rest under -m slow.
TRITON_DEFAULT = ["LSTM layer_norm", "GRU"]


@pytest.mark.parametrize(
    "option",
    TRITON_DEFAULT
    + [pytest.param(o, marks=pytest.mark.slow) for o in ("LSTM", "LSTM trace", "RNN relu")],
)
@pytest.mark.parametrize(
    "tool",
    [pytest.param(t, marks=pytest.mark.slow) if t == "func.jacrev" else t for t in FAST_TOOLS],
)
def test_triton_operators_under_the_interpreter(tool: str, option: str, monkeypatch) -> None:
    """The Triton engine's operators (run on CPU by Triton's interpreter, as conftest.py set it
    up) under the same tools: the same results, or the ONNX exporter's refusal with a reason."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    result = interop.check(tool, option, "triton")
    if tool.startswith("onnx"):
        assert result.startswith("refused: ") and "no ONNX form" in result, result
    else:
        assert result == "works", f"{tool} / {option}: {result}"
