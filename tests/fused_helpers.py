"""Shared by the fused-engine tests: build one RecurrentCall from a layer and run engines on it.

Running two engines on the *same* call (same weights, same sampled masks) makes training-mode
runs comparable exactly; inter-layer dropout draws from torch's RNG inside run_stack, so each run
is preceded by the same seed.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from lstmkit import engines
from lstmkit.engines import cpu_loops
from lstmkit.engines.base import RecurrentCall
from lstmkit.nn import inputs

DT = torch.float64


def make_call(layer, x, hx, lengths, return_trace: bool) -> RecurrentCall:
    """What layer.forward builds before it picks an engine (masks and weight drop sampled once)."""
    prep = inputs.prepare(layer, x, hx, lengths)
    xx = prep.x
    T, B = (xx.shape[1], xx.shape[0]) if layer.batch_first else (xx.shape[0], xx.shape[1])
    return RecurrentCall(
        spec=layer.spec,
        params=layer._params(),
        x=xx,
        hx=prep.hx,
        lengths=prep.lengths,
        training=layer.training,
        masks=layer._sample_masks(T, B, xx),
        return_trace=return_trace,
    )


def random_loss(result, gen: torch.Generator) -> torch.Tensor:
    """A loss that reads every output: sum of each tensor times fixed random weights."""
    tensors = [result.output, *result.h_n]
    if result.trace is not None:
        tr = result.trace
        tensors += [*(tr.gates[k] for k in tr.gate_names), tr.hidden]
        if tr.cell is not None:
            tensors.append(tr.cell)
    loss = torch.zeros((), dtype=DT)
    for t in tensors:
        loss = loss + (t * torch.randn(t.shape, generator=gen, dtype=DT)).sum()
    return loss


def run_engine(name: str, call: RecurrentCall, wrt: list[torch.Tensor], seed: int = 0):
    """Run engine `name` on `call`; return (result, gradients of a random loss w.r.t. `wrt`)."""
    engine = engines.ENGINES[name]
    assert engine.unsupported(call) is None, engine.unsupported(call)
    torch.manual_seed(seed)  # inter-layer dropout: the same draws for every engine
    result = engine.run(call)
    loss = random_loss(result, torch.Generator().manual_seed(1234))
    grads = torch.autograd.grad(loss, wrt, retain_graph=True, allow_unused=True)
    return result, grads


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine OpenMP's spinning threads
    can make each op 100x slower; restore the previous setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def compiled_loops():
    """The fused engine's compiled CPU loops must be in use wherever a C++ compiler exists (a
    build failure there is a bug, not a reason to test the fallback twice)."""
    if os.environ.get(cpu_loops.ENV_SWITCH) == "0":
        pytest.skip(f"{cpu_loops.ENV_SWITCH}=0: compiled loops switched off")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler: the fused engine runs its pure-PyTorch loops")
    assert cpu_loops.cpu_loops() is not None, "the compiled CPU loops failed to build"
