"""Running `lstmkit train` under torchrun: process-group setup and the few collectives it needs.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; when WORLD_SIZE > 1 the
trainer calls `setup()`, which joins the process group with gloo on CPU or NCCL on GPU. Each rank
then trains on its own B/W columns of the token stream (data/batching.py), DistributedDataParallel
averages the gradients, rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """What torchrun (or any launcher setting the same variables) says about this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> DistInfo:
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def any_true(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank if `flag` is true on any rank (so all ranks stop together)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def gather_columns(t: Tensor) -> Tensor:
    """(L, b, H) per rank -> (L, W*b, H) on every rank: the global batch's hidden state, so a
    checkpoint does not depend on how many processes wrote it."""
    if not active():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=1)


def rank_columns(t: Tensor, info: DistInfo) -> Tensor:
    """This rank's columns of a (L, B, H) global hidden state."""
    b = t.shape[1] // info.world_size
    return t[:, info.rank * b : (info.rank + 1) * b].contiguous()
