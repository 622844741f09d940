"""Shared helpers for the core tests: build torch.nn and lstmkit twins, run both, compare."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstmkit

# Triton decides between its interpreter and its compiler when it is first imported, and
# torch.compile / torch.export (tests/test_interop.py) import it too. So the first import is
# made here, interpreted, for the Triton engine's tests (the compile test uses a subprocess);
# the flag is restored at once, so other tests see a machine without a Triton engine.
if importlib.util.find_spec("triton") is not None:
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
    finally:
        del os.environ["TRITON_INTERPRET"]

F64 = torch.float64
ATOL = 1e-8  # float64 tolerance for every comparison with torch.nn (issue 2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def twins(kind: str, *args, engine: str = "auto", **kwargs):
    """(torch.nn module, lstmkit module) with identical float64 weights."""
    ref = getattr(torch.nn, kind)(*args, **kwargs).to(F64)
    ours = getattr(lstmkit, kind)(*args, engine=engine, **kwargs).to(F64)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def as_padded(out, batch_first: bool) -> torch.Tensor:
    if isinstance(out, PackedSequence):
        return pad_packed_sequence(out, batch_first=batch_first)[0]
    return out


def states(hx) -> tuple[torch.Tensor, ...]:
    return tuple(hx) if isinstance(hx, tuple) else (hx,)


def loss_of(out, hx, batch_first: bool, gen: torch.Generator) -> torch.Tensor:
    """A scalar that depends on every output and state element with random weights, so gradients
    of every element are checked (a plain sum would hide sign and permutation errors)."""
    y = as_padded(out, batch_first)
    total = (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum()
    for s in states(hx):
        total = total + (s * torch.randn(s.shape, generator=gen, dtype=s.dtype)).sum()
    return total


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = ATOL) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= atol, f"{what}: max |difference| {err:.3e} > {atol:.0e}"


def compare_run(ref, ours, make_input, hx=None, batch_first=False, ours_kwargs=None):
    """Run both modules forward and backward; compare outputs, final states and the gradients of
    the input, the initial states and every parameter."""
    ours_kwargs = ours_kwargs or {}
    results = []
    for module, kwargs in ((ref, {}), (ours, ours_kwargs)):
        module.zero_grad()
        x, model_input = make_input()
        h0 = None
        if hx is not None:
            h0 = tuple(h.clone().requires_grad_(True) for h in states(hx))
        arg = None if h0 is None else (h0 if len(h0) > 1 else h0[0])
        out, h_n = module(model_input, arg, **kwargs)[:2]
        gen = torch.Generator().manual_seed(7)
        loss_of(out, h_n, batch_first, gen).backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters()}
        results.append((as_padded(out, batch_first), states(h_n), x.grad, h0, grads, out))
    (y0, s0, gx0, h00, g0, o0), (y1, s1, gx1, h01, g1, o1) = results
    assert type(o0) is type(o1), "output type differs (PackedSequence vs Tensor)"
    if isinstance(o0, PackedSequence):
        assert torch.equal(o0.batch_sizes, o1.batch_sizes)
        assert_close(o0.data, o1.data, "packed output data")
    assert_close(y0, y1, "output")
    for i, (a, b) in enumerate(zip(s0, s1)):
        assert_close(a, b, f"final state {i}")
    assert_close(gx0, gx1, "input gradient")
    if h00 is not None:
        for i, (a, b) in enumerate(zip(h00, h01)):
            assert_close(a.grad, b.grad, f"initial state {i} gradient")
    assert g0.keys() == g1.keys()
    for name in g0:
        assert_close(g0[name], g1[name], f"gradient of {name}")


def make_inputs(mode: str, T: int, B: int, I: int, batch_first: bool, lengths: torch.Tensor):
    """A factory returning (leaf x, what to feed torch.nn) for mode padded/packed/unbatched."""
    base = torch.randn(B, T, I, dtype=F64) if batch_first else torch.randn(T, B, I, dtype=F64)

    def make():
        x = base.clone().requires_grad_(True)
        if mode == "padded":
            return x, x
        if mode == "packed":
            return x, pack_padded_sequence(
                x, lengths, batch_first=batch_first, enforce_sorted=False
            )
        if mode == "unbatched":
            return x, x[0] if batch_first else x[:, 0]
        raise ValueError(mode)

    return make
