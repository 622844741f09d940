"""Per-sample resets, as every engine that supports them applies them (forward(..., resets=)).

A reset of sequence b before step t means the state entering step t is b's initial state (hx's
row b) instead of the state after step t - 1: the segments before and after run as if apart.
An engine's loop calls `restart` at each step; its backward sends the gradient reaching a reset
row's entering state to the initial state instead (ResetGrad); its "previous state" stacks use
the initial state on those rows (`torch.where(reset, s0, previous)`).
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


def reset_steps(reset: Tensor | None) -> frozenset[int]:
    """The steps t where some sequence starts afresh (one device sync per direction)."""
    if reset is None:
        return frozenset()
    return frozenset(torch.nonzero(reset.reshape(reset.shape[0], -1).any(dim=1)).view(-1).tolist())


def restart(t: int, steps: frozenset[int], reset, initial, state) -> tuple[Tensor, ...]:
    """The state entering step t: `state`, with the initial state's rows where reset[t]."""
    if t not in steps:
        return state
    return tuple(torch.where(reset[t], s0, s) for s0, s in zip(initial, state))


class ResetGrad:
    """The backward of a reset: the gradient reaching the state that entered step t goes, on
    the rows reset at t, to the initial state instead of to the previous step."""

    def __init__(self, reset: Tensor | None) -> None:
        self.reset, self.steps = reset, reset_steps(reset)
        self.to_initial: Tensor | None = None

    def __call__(self, t: int, d: Tensor | None) -> Tensor | None:
        """d (B, *) = d loss / d (state entering step t) -> what reaches step t - 1."""
        if t not in self.steps or d is None:
            return d
        r = self.reset[t]
        moved = torch.where(r, d, 0.0)
        self.to_initial = moved if self.to_initial is None else self.to_initial + moved
        return torch.where(r, 0.0, d)

    def initial(self, d0: Tensor) -> Tensor:
        """d0: the gradient carried past the first step -> the initial state's whole gradient."""
        return d0 if self.to_initial is None else d0 + self.to_initial
