"""fit(): the training loop every lstmkit trainer shares.

The language-model trainer (`lstmkit train`), the sentence models of the agreement tools and the
long-range tasks all train the same way, and this is that way, once:

    for batch in batches:
        step = compute(batch)                  # the caller's forward and loss
        stop if the loss is NaN or inf         # before its backward: the weights stay good
        backward, clip, optimizer step         # loop.optimizer_step
        after(state, step)                     # the caller's bookkeeping; may stop the run
        every `every` steps: periodic(state)   # evaluation, checkpoints; may stop the run
        stop at max_steps or max_seconds

What differs between the trainers is data, not control flow: which batches, how a batch
becomes a loss, what to record after a step, when to evaluate and save. Those come in as the
arguments below; the state is a dataclass the trainers extend with their own fields (the
language model's epoch, window and best loss: trainer.TrainState).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lstmkit.training.loop import check_loss, optimizer_step


@dataclass
class Step:
    """What one batch gives the loop.

    loss: the scalar to backpropagate.
    value: the number to report and check (nats per token for a language model, whose `loss`
        may be summed over the steps of the window); None: fit() sets it to loss.item().
    extra: whatever the caller's `after` wants to see of this batch (a task's per-sequence
        correctness, the window's index), passed through untouched."""

    loss: Tensor
    value: float | None = None
    extra: Any = None


@dataclass
class LoopState:
    """What the loop itself counts. Trainers subclass it to add their own fields."""

    step: int = 0  # optimizer steps taken over the whole run (a resumed run continues it)
    seconds: float = 0.0  # training wall time in this process: `periodic` calls excluded
    stopped_by: str = ""  # "exhausted" (batches ran out), "max_steps", "max_seconds", or a
    # reason returned by `after` / `periodic`


@dataclass
class Loop:
    """How the loop runs: clipping and when to stop or call back."""

    clip: float = 0.0  # clip the gradient's global L2 norm to this (0: no clipping)
    max_steps: int | None = None  # stop once state.step reaches this (None: no limit)
    max_seconds: float | None = None  # stop once state.seconds passes this (None: no limit)
    every: int = 0  # call `periodic` after every this many steps (0: never)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable,
    compute: Callable[[Any], Step],
    state: LoopState,
    loop: Loop,
    after: Callable[[LoopState, Step], str | None] | None = None,
    periodic: Callable[[LoopState], str | None] | None = None,
) -> LoopState:
    """Train `model` on `batches` until they run out or a stop condition holds; returns `state`
    (updated in place) with `stopped_by` saying why it returned.

    compute(batch) -> Step runs the forward pass and the loss (the model is in train mode).
    after(state, step), called after each optimizer step, and periodic(state), called after
    every `loop.every` steps, return None to go on or a reason string to stop. Raises
    NonFiniteLossError on a NaN or inf loss (before its backward: the weights stay as the last
    good step left them) or gradient norm (before the optimizer step); under torchrun every
    rank stops at the same step, or the others would hang in the gradient all-reduce."""
    if loop.max_steps is not None and state.step >= loop.max_steps:
        state.stopped_by = "max_steps"
        return state
    for batch in batches:
        t0 = time.perf_counter()
        model.train()
        step = compute(batch)
        if step.value is None:
            step.value = step.loss.item()  # `after` sees the value that was checked
        check_loss(step.value, state.step + 1, step.loss.device)
        optimizer_step(model, optimizer, step.loss, loop.clip, state.step + 1)
        state.step += 1
        reason = after(state, step) if after is not None else None
        state.seconds += time.perf_counter() - t0
        if reason is None and periodic is not None and loop.every and state.step % loop.every == 0:
            reason = periodic(state)
        if reason is None and loop.max_steps is not None and state.step >= loop.max_steps:
            reason = "max_steps"
        if reason is None and loop.max_seconds is not None and state.seconds > loop.max_seconds:
            reason = "max_seconds"
        if reason is not None:
            state.stopped_by = reason
            return state
    state.stopped_by = "exhausted"
    return state
