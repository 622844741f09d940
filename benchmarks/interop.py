"""Which PyTorch tools work on which engine and option: the interoperability table.

    python benchmarks/interop.py                 # every case; writes docs/interop.md and JSON
    python benchmarks/interop.py --quick         # the fast tools only (no torch.compile)

Each cell of the table runs one tool on one layer (T, B, I, H = 6, 3, 5, 8, evaluation mode, an
ordinary input without requires_grad) and checks the result against eager PyTorch (outputs and,
where the tool differentiates, gradients; 1e-5, bf16 autocast 5e-2). A cell says "works",
"refused: ..." (lstmkit raised an error that names what cannot be done), "n/a" (the engine does
not compute that option at all) or "FAILS: ..." (anything else: a bug). tests/test_interop.py
runs the fast cases in the default suite and the compile cases under -m slow.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

import lstmkit

REPO_ROOT = Path(__file__).resolve().parents[1]
T, B, I, H = 6, 3, 5, 8

OPTIONS: dict[str, tuple[type, dict]] = {
    "LSTM": (lstmkit.LSTM, {}),
    "LSTM peephole": (lstmkit.LSTM, {"peephole": True}),
    "LSTM coupled": (lstmkit.LSTM, {"coupled": True}),
    "LSTM layer_norm": (lstmkit.LSTM, {"layer_norm": True}),
    "LSTM proj_size": (lstmkit.LSTM, {"proj_size": 3}),
    "LSTM zoneout (eval)": (lstmkit.LSTM, {"zoneout": 0.2}),
    "LSTM 2 layers bidir": (lstmkit.LSTM, {"num_layers": 2, "bidirectional": True}),
    "LSTM peephole coupled 2x bidir": (
        lstmkit.LSTM,
        {"peephole": True, "coupled": True, "num_layers": 2, "bidirectional": True},
    ),
    "LSTM trace": (lstmkit.LSTM, {"_trace": True}),
    "GRU": (lstmkit.GRU, {}),
    "GRU layer_norm": (lstmkit.GRU, {"layer_norm": True}),
    "RNN relu": (lstmkit.RNN, {"nonlinearity": "relu"}),
}
ENGINES = ("auto", "native", "fused", "reference")


class Probe(torch.nn.Module):
    """The layer's output as one tensor (with a trace: plus the forget / update gates)."""

    def __init__(self, layer: torch.nn.Module, trace: bool) -> None:
        super().__init__()
        self.layer, self.trace = layer, trace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.trace:
            return self.layer(x)[0]
        out, _, tr = self.layer(x, return_trace=True)
        return out + tr.gates[tr.gate_names[1]].sum(0).sum(0)


def build(option: str, engine: str) -> Probe:
    cls, kw = OPTIONS[option]
    kw = dict(kw)
    trace = kw.pop("_trace", False)
    torch.manual_seed(0)
    return Probe(cls(I, H, engine=engine, **kw), trace).eval()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal to float32 rounding: |a - b| <= tol * max(1, max |b|) (gradients reach ~10)."""
    err = (a.float() - b.float()).abs().max().item()
    scale = max(1.0, b.abs().max().item())
    if err > tol * scale:
        raise AssertionError(f"wrong result: off by {err:.2e} (tolerance {tol:g} x {scale:.3g})")


def _grads(model: Probe, fn: Callable, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    fn(x).square().sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def tool_compile(backend: str) -> Callable:
    def run(model: Probe, x: torch.Tensor) -> None:
        compiled = torch.compile(model, backend=backend, fullgraph=True)
        _close(compiled(x), model(x))
        for a, b in zip(_grads(model, compiled, x), _grads(model, model, x)):
            _close(a, b)

    return run


def tool_export(dynamic_t: bool) -> Callable:
    def run(model: Probe, x: torch.Tensor) -> None:
        dims = {1: torch.export.Dim("batch")}
        if dynamic_t:
            dims[0] = torch.export.Dim("time")
        ep = torch.export.export(model, (x,), dynamic_shapes=({**dims},))
        other = torch.randn(T + 3 if dynamic_t else T, B + 2, I)
        _close(ep.module()(other), model(other))
        # and the exported graph trains: the same input gradient as eager
        a, b = other.clone().requires_grad_(), other.clone().requires_grad_()
        ep.module()(a).square().sum().backward()
        model(b).square().sum().backward()
        _close(a.grad, b.grad)

    return run


def tool_compile_frozen(model: Probe, x: torch.Tensor) -> None:
    """torch.compile of a model whose parameters are frozen (a feature extractor), eval mode."""
    model.requires_grad_(False)
    try:
        _close(torch.compile(model, backend="aot_eager", fullgraph=False)(x), model(x))
        with torch.no_grad():
            _close(torch.compile(model, backend="aot_eager")(x), model(x))
    finally:
        model.requires_grad_(True)


def tool_func_grad(model: Probe, x: torch.Tensor) -> None:
    params = dict(model.named_parameters())

    def loss(p):
        return torch.func.functional_call(model, p, (x,)).square().sum()

    grads = torch.func.grad(loss)(params)
    for (_, a), b in zip(grads.items(), _grads(model, model, x)):
        _close(a, b)


def tool_jacrev(model: Probe, x: torch.Tensor) -> None:
    jac = torch.func.jacrev(model)(x)  # (T, B, D*H_out, T, B, I)
    y = model(x.clone().requires_grad_())
    v = torch.randn_like(y)
    xx = x.clone().requires_grad_()
    (vjp,) = torch.autograd.grad((model(xx) * v).sum(), xx)
    _close(torch.einsum("abc,abcdef->def", v, jac), vjp)


def tool_autocast(model: Probe, x: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    _close(out, model(x), tol=5e-2)


def tool_jit_trace(model: Probe, x: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (x,), check_trace=True)
    _close(traced(x), model(x))


def tool_onnx(model: Probe, x: torch.Tensor) -> str | None:
    """Exported with dynamic batch and length; another batch size must give eager's result,
    another length either that too or a refusal by onnxruntime ("fixed T"), never a wrong one."""
    import onnxruntime

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = {"x": {0: "time", 1: "batch"}}
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"], dynamic_axes=axes)
    onnxruntime.set_default_logger_severity(4)  # the refusal below is expected: no log noise
    session = onnxruntime.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])

    def run(inp: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"x": inp.numpy()})[0])

    other = torch.randn(T, B + 4, I)
    _close(run(other), model(other))
    longer = torch.randn(T + 3, B, I)
    try:
        got = run(longer)
    except Exception:  # onnxruntime refuses the unrolled graph's other lengths (see reference.py)
        return "fixed T"
    _close(got, model(longer))
    return None


def tool_onnx_dynamo(model: Probe, x: torch.Tensor) -> str | None:
    """torch.onnx.export(dynamo=True): the exported program at another batch size and length."""
    import logging

    import onnxruntime

    logging.disable(logging.WARNING)  # the exporter's progress lines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dims = ({0: torch.export.Dim("time"), 1: torch.export.Dim("batch")},)
            program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=dims)
    finally:
        logging.disable(logging.NOTSET)
    f = io.BytesIO()
    program.save(f)
    onnxruntime.set_default_logger_severity(4)
    session = onnxruntime.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    other = torch.randn(T, B + 4, I)
    _close(torch.from_numpy(session.run(None, {name: other.numpy()})[0]), model(other))
    longer = torch.randn(T + 3, B, I)
    try:
        got = torch.from_numpy(session.run(None, {name: longer.numpy()})[0])
    except Exception:
        return "fixed T"
    _close(got, model(longer))
    return None


TOOLS: dict[str, tuple[Callable, bool]] = {  # name -> (check, slow)
    "compile aot_eager": (tool_compile("aot_eager"), False),
    "compile inductor": (tool_compile("inductor"), True),
    "compile, frozen weights": (tool_compile_frozen, False),
    "export (dynamic B)": (tool_export(False), False),
    "export (dynamic T, B)": (tool_export(True), False),
    "func.grad": (tool_func_grad, False),
    "func.jacrev": (tool_jacrev, False),
    "autocast bf16": (tool_autocast, False),
    "jit.trace": (tool_jit_trace, False),
    "onnx (TorchScript)": (tool_onnx, False),
    "onnx (dynamo)": (tool_onnx_dynamo, True),
}


# Limits of PyTorch's own, recognised by their messages: reported as refusals with the reason.
KNOWN_LIMITS = {
    "Constraints violated (time)": "a Python time loop or torch's kernel fixes T in the graph",
    "torch.compiler.disable": "torch's RNN kernels run outside the graph: a graph break, as "
    "torch.nn.LSTM's (fullgraph=True refuses it)",
    "marked as skipped": "torch's RNN kernels run outside the graph: a graph break, as "
    "torch.nn.LSTM's (fullgraph=True refuses it; engine='auto' uses the fused operators)",
    "Failed to convert the exported program to an ONNX model": "the fused operators have no "
    "ONNX function for the dynamo exporter (engine='auto' exports the reference engine's loop)",
    "Input initial_c must have shape": "torch's dynamo ONNX exporter writes torch's LSTM with "
    "projections with fixed state shapes, which onnxruntime refuses at another batch size "
    "(engine='auto' exports it unrolled instead)",
}


# lstmkit's own refusals, by their wording (anything else is a FAILS)
OWN_REFUSALS = ("cannot run this configuration", "no double backward")


def check(tool: str, option: str, engine: str) -> str:
    """One cell of the table: works / refused: ... / n/a / FAILS: ..."""
    model = build(option, engine)
    x = torch.randn(T, B, I)
    try:
        model(x)
    except ValueError as exc:
        if "cannot run this configuration" in str(exc):
            return "n/a"
        raise
    try:
        note = TOOLS[tool][0](model, x)
    except Exception as exc:  # the table records what every tool does, failures included
        text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())  # no ANSI colours
        for pattern, reason in KNOWN_LIMITS.items():
            if pattern in text:
                return "refused: " + reason
        if any(phrase in text for phrase in OWN_REFUSALS):
            return "refused: " + text[:160]
        return f"FAILS: {type(exc).__name__}: {text[:160]}"
    torch._dynamo.reset()
    return "works" if note is None else f"works ({note})"


def run_all(tools: list[str], options: list[str], engines: list[str], progress=True) -> dict:
    results: dict = {}
    for tool in tools:
        for option in options:
            for engine in engines:
                t0 = time.perf_counter()
                results[(tool, option, engine)] = check(tool, option, engine)
                if progress:
                    took = time.perf_counter() - t0
                    status = results[(tool, option, engine)][:60]
                    print(f"{tool:22s} {option:20s} {engine:9s} {took:5.1f}s {status}", flush=True)
    return results


def markdown(results: dict, tools, options, engines) -> str:
    short = {"works": "yes", "n/a": "–", "works (fixed T)": "yes (fixed T)"}
    lines = []
    for tool in tools:
        lines += [f"### {tool}", "", "| option | " + " | ".join(engines) + " |"]
        lines.append("|---" * (len(engines) + 1) + "|")
        for option in options:
            cells = []
            for engine in engines:
                r = results[(tool, option, engine)]
                cells.append(short.get(r, r.split(":")[0]))
            lines.append(f"| {option} | " + " | ".join(cells) + " |")
        notes = {r for (t, _, _), r in results.items() if t == tool and ": " in r}
        lines += [""] + [f"- {n}" for n in sorted(notes)] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the slow tools (torch.compile)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/interop.json")
    ap.add_argument("--md", type=Path, default=REPO_ROOT / "docs/interop-table.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tools = [t for t, (_, slow) in TOOLS.items() if not (slow and args.quick)]
    options, engines = list(OPTIONS), list(ENGINES)
    results = run_all(tools, options, engines)
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "command": "python benchmarks/interop.py" + (" --quick" if args.quick else ""),
    }
    table = markdown(results, tools, options, engines)
    args.md.write_text(
        "# Interoperability: PyTorch tools x engines x options\n\n"
        f"Made by `python benchmarks/interop.py{' --quick' if args.quick else ''}` with torch "
        f"{env['torch']}; T, B, I, H = {T}, {B}, {I}, {H}, evaluation mode. 'yes' = the result "
        "equals eager PyTorch's; '–' = the engine does not compute that option.\n\n" + table
    )
    flat = {" | ".join(k): v for k, v in results.items()}
    args.out.write_text(json.dumps({"env": env, "results": flat}, indent=1))
    fails = [k for k, v in results.items() if v.startswith("FAILS")]
    print(f"{len(results)} cases, {len(fails)} failing; wrote {args.md} and {args.out}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
