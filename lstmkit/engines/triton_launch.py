"""What the Triton engine's forward (triton_gpu.py) and backward (triton_backward.py) share: the
constant part of a direction (Spec), the launch of one step's kernel, and small helpers.

Kernels are launched with keyword arguments named as in their signatures (triton_lstm.py,
triton_gru.py), one program per (row b, block of BLOCK hidden units). Every pointer argument is
documented there with its shape; the per-step ones are slices [t] of (T, B, *) buffers, so a
kernel sees (B, *) rows. Pointers a configuration does not use get a 1-element dummy (never
read: the constexpr flags switch those loads off).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lstmkit.cells.regularizers import StepMasks

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
WEIGHTS = ("w_hh", "b_hh", "ln_hh", "w_peep", "ln_c_w", "ln_c_b", "w_hr")


@dataclass
class Spec:
    """The constant part of one direction's run (not differentiated)."""

    cell: str  # "LSTM", "GRU" or "RNN"
    coupled: bool
    relu: bool
    reverse: bool
    valid: Tensor | None  # (T, B) int8
    masks: StepMasks
    rates: tuple[float, float]  # zoneout (hidden, cell) used in evaluation; 0 in training
    hidden_size: int
    reset: Tensor | None = None  # (T, B, 1) bool: the state entering step t is the initial one

    def zone(self, which: int) -> int:
        """Kernel zoneout flag for the hidden (0) or cell (1) state: 0 off, 1 mask, 2 rate."""
        mask = (self.masks.zoneout_h, self.masks.zoneout_c)[which]
        return 1 if mask is not None else (2 if self.rates[which] > 0 else 0)

    def keep(self, which: int, t: int, like: Tensor) -> Tensor | float:
        """The zoneout keep factor at step t as a tensor or a number (host-side use)."""
        mask = (self.masks.zoneout_h, self.masks.zoneout_c)[which]
        return mask[t].to(like.dtype) if mask is not None else self.rates[which]


def launch(kernel, spec: Spec, B: int, *, ln: bool, acc: torch.dtype, **named) -> None:
    """One step's kernel over (B rows) x (H / BLOCK blocks); `named`: the kernel's arguments by
    name (pointers, sizes, rates and its constexpr flags)."""
    import triton.language as tl

    H = spec.hidden_size
    block = 1 << max(0, (H - 1).bit_length())
    block = block if ln else min(block, 256)  # layer norm needs a whole row per program
    grid = (B, (H + block - 1) // block)
    acc_tl = tl.float64 if acc == torch.float64 else tl.float32
    kernel[grid](HAS_VALID=spec.valid is not None, ACC=acc_tl, BLOCK=block, **named)


def or_dummy(t: Tensor | None, dummy: Tensor) -> Tensor:
    return dummy if t is None else t
