"""Shared helpers for the core tests: build torch.nn and lstmkit twins, run both, compare."""

from __future__ import annotations

import importlib.util
import os

import mutation_hooks
import parity
import pytest
import torch
from hypothesis import HealthCheck, settings
from torch.nn.utils.rnn import pack_padded_sequence

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

# The fuzz layer (hypothesis). The default profile is derandomized, so CI is reproducible and a
# failure found there can be rerun as is; LSTMKIT_FUZZ=explore draws fresh, more numerous
# examples each run (the habit before a release, or after touching validation code).
# (The autouse seed fixture runs once per test, not per example: examples draw their own data.)
_quiet = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, suppress_health_check=_quiet
)
settings.register_profile("explore", max_examples=400, deadline=None, suppress_health_check=_quiet)
settings.load_profile(os.environ.get("LSTMKIT_FUZZ", "ci"))

F64 = torch.float64
ATOL = 1e-8  # float64 tolerance for every comparison with torch.nn (issue 2)

# Mutation runs (scripts/mutation.py): a mutant's tests are collected from their files and run
# killers first, then fastest first; each mutant's cost is recorded (tests/mutation_hooks.py). The
# hooks do nothing outside mutmut.


def pytest_configure(config):
    mutation_hooks.configure(config)


def pytest_collection_modifyitems(config, items):
    mutation_hooks.modify_items(config, items)


def pytest_runtest_logreport(report):
    mutation_hooks.logreport(report)


def pytest_sessionfinish(session, exitstatus):
    mutation_hooks.sessionfinish(exitstatus)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def twins(kind: str, *args, engine: str = "auto", **kwargs):
    """(torch.nn module, lstmkit module) with identical float64 weights."""
    ref = getattr(torch.nn, kind)(*args, **kwargs).to(F64)
    ours = getattr(lstmkit, kind)(*args, engine=engine, **kwargs).to(F64)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = ATOL) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= atol, f"{what}: max |difference| {err:.3e} > {atol:.0e}"


def compare_run(ref, ours, make_input, hx=None, batch_first=False, ours_kwargs=None):
    """Run both modules forward and backward (tests/parity.py); compare outputs, final states
    and the gradients of the input, the initial states and every parameter (float64)."""
    want = parity.run(ref, make_input, hx, batch_first=batch_first)
    got = parity.run(ours, make_input, hx, batch_first=batch_first, **(ours_kwargs or {}))
    parity.assert_same(got, want, F64)


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
