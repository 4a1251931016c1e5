"""Data-parallel training under ``torchrun``: a thin layer over ``torch.distributed`` (DDP).

    torchrun --nproc_per_node 2 .venv/bin/vlbridge train --preset tiny-cpu --batch-size 8 ...

Every process (rank) builds the same model, reads the same records and follows the same seeded data order;
each optimizer step takes one *global* batch of ``batch_size x world`` records and rank r trains on its r-th
slice (``batch_size`` is per process, as HF's per-device batch size). The loss is normalised by the
supervised-token weight of the whole global batch (summed over ranks) and scaled by the world size, so
after DDP averages the gradients they equal a single process's gradient over the global batch: N ranks x
batch b train the same model as one process with batch N*b. Rank 0 alone logs, validates and writes
checkpoints; the data position in a checkpoint counts global batches, so ``--resume`` continues exactly
with the same number of processes.

Backend: gloo on CPU (this project's target), NCCL when CUDA is available. Without torchrun's environment
(``WORLD_SIZE`` unset or 1) nothing here does anything.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env() -> DistContext:
    """Join the process group torchrun describes in the environment (once); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size())


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: DistContext, find_unused_parameters: bool = True) -> torch.nn.Module:
    """The module the training forward goes through: DDP over ``model`` when distributed, else ``model``.

    Call after the stage has frozen what it freezes (DDP registers the parameters that require grad).
    DDP broadcasts rank 0's parameters, so every rank starts from the same weights.
    """
    if not ctx.enabled:
        return model
    return DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


def sum_across(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of a few floats over all ranks (float64)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def check_same_everywhere(what: str, text: str, ctx: DistContext) -> None:
    """Fail loudly if ranks disagree about ``text`` (e.g. a tokenizer trained in-process on each rank)."""
    if not ctx.enabled:
        return
    digest = hashlib.sha256(text.encode()).hexdigest()
    digests: list[str] = [""] * ctx.world
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks disagree about the {what} (digests {digests}); build it once and pass it "
                           "by path instead")


def rank_slice(global_batch: list[int], ctx: DistContext) -> list[int]:
    """This rank's contiguous share of a global batch of ``batch_size x world`` indices."""
    per_rank = len(global_batch) // ctx.world
    return global_batch[ctx.rank * per_rank:(ctx.rank + 1) * per_rank]
