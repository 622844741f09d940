"""The training loop every trainer shares (lstmkit/training/fit.py): its steps, its stopping
rules, its callbacks, and the NaN stop before a bad update."""

from __future__ import annotations

import time

import pytest
import torch

from lstmkit.training.fit import Loop, LoopState, Step, fit
from lstmkit.training.loop import NonFiniteLossError


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(10)]
    return model, opt, data


def _compute(model):
    def compute(batch) -> Step:
        x, y = batch
        return Step(((model(x) - y) ** 2).mean(), extra=len(x))

    return compute


def test_fit_takes_one_sgd_step_per_batch_like_a_hand_written_loop() -> None:
    model, opt, data = _setup()
    ref, ref_opt, _ = _setup()
    state = fit(model, opt, data, _compute(model), LoopState(), Loop(clip=0.5))
    for x, y in data:  # the same steps by hand
        ref_opt.zero_grad()
        ((ref(x) - y) ** 2).mean().backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_opt.step()
    assert (state.step, state.stopped_by) == (10, "exhausted")
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    assert state.seconds > 0


def test_max_steps_counts_from_the_state_and_consumes_no_batch_once_reached() -> None:
    model, opt, data = _setup()
    seen = []
    batches = (seen.append(i) or b for i, b in enumerate(data))
    state = fit(model, opt, batches, _compute(model), LoopState(step=7), Loop(max_steps=9))
    assert (state.step, state.stopped_by, seen) == (9, "max_steps", [0, 1])
    state = fit(model, opt, iter(data), _compute(model), state, Loop(max_steps=9))
    assert (state.step, state.stopped_by) == (9, "max_steps")  # already there: no step


def test_after_and_periodic_see_every_step_and_can_stop_the_run() -> None:
    model, opt, data = _setup()
    after_calls, periodic_calls = [], []

    def after(state, step):
        after_calls.append((state.step, step.extra))
        return None

    def periodic(state):
        periodic_calls.append(state.step)
        return "enough" if state.step == 6 else None

    state = fit(
        model, opt, data, _compute(model), LoopState(), Loop(every=3), after=after,
        periodic=periodic,
    )  # fmt: skip
    assert after_calls == [(k, 4) for k in range(1, 7)]
    assert periodic_calls == [3, 6]
    assert (state.step, state.stopped_by) == (6, "enough")


def test_max_seconds_counts_training_time_only() -> None:
    model, opt, data = _setup()

    def slow_periodic(state):  # an evaluation: not training time
        time.sleep(0.05)

    state = fit(
        model, opt, data, _compute(model), LoopState(), Loop(max_seconds=0.04, every=1),
        periodic=slow_periodic,
    )  # fmt: skip
    assert (state.step, state.stopped_by) == (10, "exhausted")  # 0.5 s of sleeps did not count

    def slow_compute(batch):
        time.sleep(0.03)
        return _compute(model)(batch)

    state = fit(model, opt, data, slow_compute, LoopState(), Loop(max_seconds=0.05))
    assert (state.step, state.stopped_by) == (2, "max_seconds")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_before_its_update(bad: float) -> None:
    model, opt, data = _setup()

    def compute(batch) -> Step:
        step = _compute(model)(batch)
        return Step(step.loss * bad) if fit_state.step == 4 else step

    fit_state = LoopState()
    with pytest.raises(NonFiniteLossError, match="at step 5"):
        fit(model, opt, data, compute, fit_state, Loop())
    ref, ref_opt, _ = _setup()
    for x, y in data[:4]:
        ref_opt.zero_grad()
        ((ref(x) - y) ** 2).mean().backward()
        ref_opt.step()
    assert fit_state.step == 4
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)  # four good steps, and no fifth


def test_the_reported_value_is_checked_not_only_the_loss() -> None:
    model, opt, data = _setup()

    def compute(batch) -> Step:  # e.g. a per-token value that went bad
        return Step(_compute(model)(batch).loss, value=float("nan"))

    with pytest.raises(NonFiniteLossError, match="at step 1"):
        fit(model, opt, data, compute, LoopState(), Loop())
