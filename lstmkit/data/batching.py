"""Truncated-BPTT batching: the token stream cut into B contiguous columns, read T steps at a time.

    stream  t0 t1 t2 ... t(N*B-1)          (one long id tensor, the whole corpus)
    batchify -> (N, B): column b is tokens [b*N, (b+1)*N), so each column is one long text
    window k -> x = data[k*T : k*T+T], y = data[k*T+1 : k*T+T+1]     both (T, B)

Because window k+1 continues every column exactly where window k stopped, the trainer carries
the (detached) hidden state from one window to the next and the model keeps its context across
the whole corpus, as in Zaremba et al. 2014 and PyTorch's word_language_model.

Distributed training: with W ranks and a global batch B (B divisible by W), rank r gets columns
[r*B/W, (r+1)*B/W) of exactly the single-process batchify, i.e. its own contiguous part of the
token stream. The ranks together then see exactly the batches one process would, so averaged
gradients (DDP) equal the single-process gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


def batchify(ids: Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """(N*B,) ids -> (N, B/W) columns of this rank; the tail that does not fill a row is dropped."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D tensor, got shape {tuple(ids.shape)}")
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(
            f"batch size {batch_size} must be a positive multiple of the number "
            f"of processes ({world_size}); each process takes B/W columns"
        )
    N = ids.numel() // batch_size
    if N < 2:
        raise ValueError(
            f"{ids.numel()} tokens are too few for batch size {batch_size}: each "
            f"column needs at least 2 tokens; use a smaller --batch-size"
        )
    data = ids[: N * batch_size].view(batch_size, N).t()  # (N, B): column b = ids[b*N:(b+1)*N]
    per_rank = batch_size // world_size
    return data[:, rank * per_rank : (rank + 1) * per_rank].contiguous()  # (N, B/W)


def num_windows(data: Tensor, bptt: int) -> int:
    """How many (x, y) windows of at most `bptt` steps cover a (N, B) batchified stream."""
    return (data.shape[0] - 1 + bptt - 1) // bptt


def get_window(data: Tensor, k: int, bptt: int) -> tuple[Tensor, Tensor]:
    """Window k: x (T, B) and targets y (T, B), T = bptt except a shorter last window."""
    start = k * bptt
    T = min(bptt, data.shape[0] - 1 - start)
    if T <= 0:
        raise IndexError(f"window {k} is past the end ({num_windows(data, bptt)} windows)")
    return data[start : start + T], data[start + 1 : start + 1 + T]


def windows(data: Tensor, bptt: int, start: int = 0):
    """Yield (k, x, y) for windows start, start+1, ... (start > 0 resumes mid-epoch)."""
    for k in range(start, num_windows(data, bptt)):
        x, y = get_window(data, k, bptt)
        yield k, x, y


def as_tensor(ids: list[int]) -> Tensor:
    return torch.tensor(ids, dtype=torch.long)
