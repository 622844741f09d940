"""The one parity harness: run a module forward and backward, then compare two runs.

    run(module, make_input, hx=..., engine=..., seed=...) -> Run
        outputs, final states, the trace (when asked), and the gradients of the input, the
        initial states and every parameter, under a loss that reads every element with fixed
        random weights (a plain sum would hide sign and permutation errors)
    assert_same(got, want, dtype)     every tensor of two Runs within TOLERANCES[dtype]

Used by the comparisons with torch.nn (conftest.compare_run, test_fused_torch.py), between
engines (test_engine_parity.py, which takes its engines from lstmkit.engines.ENGINES, so
registering an engine puts it under test, and test_triton_engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

# dtype -> (atol, rtol) for every comparison between two engines (or with torch.nn). float64:
# the project's exactness bound. The others: what their rounding allows over a few steps.
TOLERANCES = {
    torch.float64: (1e-8, 0.0),
    torch.float32: (2e-5, 1e-4),
    torch.float16: (3e-3, 1e-2),
    torch.bfloat16: (3e-2, 5e-2),
}


@dataclass
class Run:
    output: torch.Tensor  # padded (PackedSequence data padded back)
    states: tuple[torch.Tensor, ...]
    grads: dict[str, torch.Tensor | None]  # "input", "h0[k]", and parameter names
    trace: object = None
    packed: PackedSequence | None = None
    extra: dict = field(default_factory=dict)


def states_of(hx) -> tuple[torch.Tensor, ...]:
    return tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)


def padded(out, batch_first: bool) -> torch.Tensor:
    if isinstance(out, PackedSequence):
        return pad_packed_sequence(out, batch_first=batch_first)[0]
    return out


def loss_of(tensors, seed: int = 7) -> torch.Tensor:
    """sum_k <t_k, r_k> with r_k fixed random weights, one per element."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64)
    for t in tensors:
        r = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
        total = total + (t * r).sum().double()
    return total


def run(
    module: torch.nn.Module,
    make_input: Callable[[], tuple[torch.Tensor, object]],
    hx: tuple[torch.Tensor, ...] | None = None,
    engine: str | None = None,
    seed: int = 0,
    batch_first: bool = False,
    return_trace: bool = False,
    trace_in_loss: bool = True,
    **kwargs,
) -> Run:
    """One forward and backward. make_input() -> (leaf tensor x, what to feed the module).
    `engine` sets an lstmkit module's engine first; `seed` is set before the forward, so two
    runs draw the same masks (sampled by the layer) and the same inter-layer dropout. With a
    trace the loss reads it too, unless trace_in_loss=False (engines whose traces are detached)."""
    if engine is not None:
        module.engine = engine
    module.zero_grad()
    x, model_input = make_input()
    h0 = None if hx is None else tuple(h.clone().requires_grad_(True) for h in states_of(hx))
    arg = None if h0 is None else (h0 if len(h0) > 1 else h0[0])
    torch.manual_seed(seed)
    if return_trace:
        kwargs["return_trace"] = True
    result = module(model_input, arg, **kwargs)
    out, state = result[0], states_of(result[1])
    trace = result[2] if return_trace else None
    y = padded(out, batch_first)
    tensors = [y, *state]
    if trace is not None and trace_in_loss:
        tensors += [trace.gates[k] for k in trace.gate_names] + [trace.hidden]
        tensors += [trace.cell] if trace.cell is not None else []
    loss_of(tensors).backward()
    grads = {"input": x.grad}
    for k, h in enumerate(h0 or ()):
        grads[f"h0[{k}]"] = h.grad
    grads.update({n: p.grad for n, p in module.named_parameters()})
    packed = out if isinstance(out, PackedSequence) else None
    return Run(y.detach(), tuple(s.detach() for s in state), grads, trace, packed)


def close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    atol, rtol = TOLERANCES[dtype]
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    torch.testing.assert_close(
        got.double(), want.double(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}"
    )


def assert_same(got: Run, want: Run, dtype: torch.dtype = torch.float64) -> None:
    """Every output, state, trace tensor and gradient of `got` equals `want`'s (TOLERANCES)."""
    if want.packed is not None or got.packed is not None:
        assert type(got.packed) is type(want.packed), "output type differs (PackedSequence?)"
        assert torch.equal(got.packed.batch_sizes, want.packed.batch_sizes)
        close(got.packed.data.detach(), want.packed.data.detach(), dtype, "packed output data")
    close(got.output, want.output, dtype, "output")
    assert len(got.states) == len(want.states), "number of final states"
    for k, (a, b) in enumerate(zip(got.states, want.states)):
        close(a, b, dtype, f"final state {k}")
    if want.trace is not None:
        for name in want.trace.gate_names:
            close(got.trace.gates[name].detach(), want.trace.gates[name].detach(), dtype,
                  f"trace gate {name}")  # fmt: skip
        close(got.trace.hidden.detach(), want.trace.hidden.detach(), dtype, "trace h")
        if want.trace.cell is not None:
            close(got.trace.cell.detach(), want.trace.cell.detach(), dtype, "trace c")
    assert got.grads.keys() == want.grads.keys(), "gradients of different tensors"
    for name, b in want.grads.items():
        a = got.grads[name]
        assert (a is None) == (b is None), f"gradient of {name}: one run has none"
        if b is not None:
            close(a, b, dtype, f"gradient of {name}")
