"""The stochastic regularisers of recurrent nets, as their papers define them.

- recurrent dropout (Gal & Ghahramani 2016, "variational"): one Bernoulli mask per sequence and
  unit, sampled once per forward call and applied to h_{t-1} at every step before W_hh.
- weight drop (Wan et al. 2013 DropConnect, as used on W_hh by AWD-LSTM, Merity et al. 2018):
  one mask on the recurrent matrix per forward call; the rest of the step is unchanged.
- zoneout (Krueger et al. 2017): each unit keeps its previous value with probability z at each
  step in training; at evaluation the expectation z * prev + (1 - z) * new is used.

Dropout masks are scaled by 1 / (1 - p) (inverted dropout) so evaluation needs no rescaling.
Masks are sampled by the layer, not the engine, so that every engine computes the same function
of (input, weights, masks): engines can be compared exactly even in training mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


class ZoneoutRates(NamedTuple):
    """Zoneout's two rates, by name: the user's pair is (cell, hidden) (Krueger et al.'s z_c,
    z_h); the states are ordered (h, c), and `by_state` gives them in that order."""

    cell: float = 0.0
    hidden: float = 0.0

    @property
    def by_state(self) -> tuple[float, float]:
        """(hidden, cell): the rates in the order of cell.state_names."""
        return self.hidden, self.cell

    @property
    def active(self) -> bool:
        return self.cell > 0 or self.hidden > 0


@dataclass
class StepMasks:
    """Masks for one layer and direction. Shapes: B batch, T steps, H hidden, H_out output.

    recurrent: (B, H_out), scaled dropout mask on h_{t-1}, or None.
    zoneout_h: (T, B, H_out), 1.0 where the hidden unit keeps its previous value, or None.
    zoneout_c: (T, B, H), same for the LSTM cell state, or None.
    """

    recurrent: Tensor | None = None
    zoneout_h: Tensor | None = None
    zoneout_c: Tensor | None = None


def dropout_mask(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """Inverted-dropout mask: 0 with probability p, else 1 / (1 - p)."""
    if p >= 1.0:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    keep = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1.0 - p)
    return keep / (1.0 - p)


def bernoulli_mask(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """1.0 with probability p, else 0.0 (unscaled: used by zoneout to choose old vs new)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(p)


def drop_weight(w: Tensor, p: float) -> Tensor:
    """DropConnect on a weight matrix: same shape, entries zeroed with probability p, rescaled."""
    return w * dropout_mask(tuple(w.shape), p, w)


def zoneout(prev: Tensor, new: Tensor, mask: Tensor | None, rate: float) -> Tensor:
    """Zoneout update. mask given (training): keep prev where mask is 1. No mask: expectation."""
    if mask is not None:
        return torch.lerp(new, prev, mask)  # new + mask * (prev - new)
    if rate == 0.0:
        return new
    return rate * prev + (1.0 - rate) * new
