"""Per-sample resets, as every engine that supports them applies them (forward(..., resets=)).

A reset of sequence b before step t means the state entering step t is b's initial state (hx's
row b) instead of the state after step t - 1: the segments before and after run as if apart.
An engine's loop calls `restart` at each step; its "previous state" stacks are
`entering_states` (the initial state on reset rows); its backward sends the gradient reaching a
reset row's entering state to the initial state instead (ResetGrad).
"""

from __future__ import annotations

import torch
from torch import Tensor


def direction_resets(resets: Tensor | None, reverse: bool) -> Tensor | None:
    """call.resets (T, B) -> DirectionCall.reset (T, B, 1). A boundary before step t separates
    t - 1 from t: going forward, step t starts afresh; going backward, step t - 1 does."""
    if resets is None:
        return None
    if not reverse:
        return resets.unsqueeze(-1)
    shifted = torch.zeros_like(resets)
    shifted[:-1] = resets[1:]
    return shifted.unsqueeze(-1)


def entering_states(
    states: Tensor, s0: Tensor, reverse: bool, reset: Tensor | None = None
) -> Tensor:
    """(T, B, *) states after each step -> the state each step started from (T, B, *): the
    previous step's, or s0 (B, *) first and wherever reset (T, B, 1) is True."""
    first = s0.unsqueeze(0).to(states.dtype)
    shifted = torch.cat([states[1:], first]) if reverse else torch.cat([first, states[:-1]])
    return shifted if reset is None else torch.where(reset, first, shifted)


def reset_steps(reset: Tensor | None) -> frozenset[int]:
    """The steps t where some sequence starts afresh (one device sync)."""
    if reset is None:
        return frozenset()
    any_row = reset.reshape(reset.shape[0], -1).any(dim=1)  # (T,)
    return frozenset(torch.nonzero(any_row).view(-1).tolist())


def restart(
    t: int,
    steps: frozenset[int],
    reset: Tensor | None,
    initial: tuple[Tensor, ...],
    state: tuple[Tensor, ...],
) -> tuple[Tensor, ...]:
    """The state entering step t: `state`, with the initial state's rows where reset[t] (B, 1);
    `steps` = reset_steps(reset), so that steps without a reset cost nothing."""
    if t not in steps:
        return state
    return tuple(torch.where(reset[t], s0, s) for s0, s in zip(initial, state))


class ResetGrad:
    """The backward of a reset, for one state (h or c): the gradient reaching the state that
    entered step t goes, on the rows reset at t, to the initial state instead of to step t - 1.
    Pass `steps` (reset_steps) when several states share the resets (one sync, not one each)."""

    def __init__(self, reset: Tensor | None, steps: frozenset[int] | None = None) -> None:
        self.reset = reset
        self.steps = reset_steps(reset) if steps is None else steps
        self.to_initial: Tensor | None = None

    def __call__(self, t: int, d: Tensor | None) -> Tensor | None:
        """d (B, *) = d loss / d (state entering step t) -> what reaches step t - 1."""
        if t not in self.steps or d is None:
            return d
        r = self.reset[t]
        moved = torch.where(r, d, 0.0)
        self.to_initial = moved if self.to_initial is None else self.to_initial + moved
        return torch.where(r, 0.0, d)

    def carry(self, t: int, entering: Tensor, output_grad: Tensor | None) -> Tensor:
        """d loss / d h_{t-1}: what entered step t (unless reset) plus the gradient of the
        output at t - 1 (which stays with h_{t-1} whatever the reset)."""
        passed = self(t, entering)
        return passed if output_grad is None else passed + output_grad

    def initial(self, d0: Tensor) -> Tensor:
        """d0: the gradient carried past the first step -> the initial state's whole gradient."""
        return d0 if self.to_initial is None else d0 + self.to_initial
