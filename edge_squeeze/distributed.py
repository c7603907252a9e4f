"""Training on several processes with PyTorch's own engine: ``torchrun`` starts them and sets the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``); this module reads it,
joins the process group (NCCL on GPUs, gloo on CPUs) and sums small statistics across processes.
A process started without ``torchrun`` is a world of one, and nothing here does anything then;
under ``torchrun`` even one process runs DistributedDataParallel, the path N processes take.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

from .errors import EdgeSqueezeError, require

log = logging.getLogger("edge_squeeze")


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (even as a world of one: DDP, the same path as N)

    @property
    def distributed(self) -> bool:
        return self.size > 1 or self.launched

    @property
    def writes_files(self) -> bool:
        """Only the first process writes checkpoints, metrics and plots."""
        return self.rank == 0


def world_from_env() -> World:
    """This process's place in a ``torchrun`` job, or a world of one."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise EdgeSqueezeError(f"RANK / WORLD_SIZE / LOCAL_RANK are not numbers: {exc}") from exc
    if size < 1 or not 0 <= rank < size:
        raise EdgeSqueezeError(f"RANK {rank} does not fit WORLD_SIZE {size}")
    return World(rank, size, local, launched="WORLD_SIZE" in os.environ and "RANK" in os.environ)


def per_process_batch(global_batch: int, world: int, accumulate: int) -> int:
    """The batch one process loads per step: the global batch split over processes and accumulation
    steps (Caffe's ``iter_size``). It must divide evenly, so every process does the same work."""
    parts = world * accumulate
    if global_batch < parts or global_batch % parts:
        raise EdgeSqueezeError(
            f"the global batch {global_batch} does not split over {world} process(es) x {accumulate} "
            f"accumulation step(s): use a multiple of {parts}"
        )
    return global_batch // parts


def init(world: World, device_type: str) -> bool:
    """Join the process group (NCCL for CUDA, gloo otherwise) when there is more than one process and
    no group exists yet; True when this call created it (its caller then calls :func:`shutdown`)."""
    if not world.distributed:
        return False
    torch = require("torch", "distributed training")
    dist = torch.distributed
    if not dist.is_available():
        raise EdgeSqueezeError("this torch build has no torch.distributed: distributed training needs it")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        log.info("process %d of %d joined (%s)", world.rank, world.size, backend)
        return True
    return False


def shutdown(world: World) -> None:
    if not world.distributed:
        return
    torch = require("torch", "distributed training")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def all_sum(values: Sequence[float], world: World, device: Any) -> list:
    """``values`` summed over all processes (as float64), the same on every one."""
    if not world.distributed:
        return list(values)
    torch = require("torch", "distributed training")
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


__all__ = ["World", "all_sum", "init", "per_process_batch", "shutdown", "world_from_env"]
