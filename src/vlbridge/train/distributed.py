"""Data-parallel training under ``torchrun``: the process group and the few collectives the loop needs.

    torchrun --nproc_per_node 2 .venv/bin/vlbridge train --preset tiny-cpu --batch-size 8 ...
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m vlbridge train ...

Every process (rank) builds the same model, reads the same records and follows the same seeded data order;
each optimizer step takes one *global* batch of ``batch_size x world`` records and rank r trains on its r-th
slice (``batch_size`` is per process, as HF's per-device batch size). The loss is normalised by the
supervised-token weight of the whole global batch (summed over ranks) and scaled by the world size, so
after DDP averages the gradients they equal a single process's gradient over the global batch: N ranks x
batch b train the same model as one process with batch N*b. Rank 0 alone logs, validates and writes
checkpoints; the data position in a checkpoint counts global batches, so ``--resume`` continues exactly
with the same number of processes. How the model itself is spread (DDP replicas or FSDP shards) is the
strategy's business (``strategy.py``, ``fsdp.py``).

Backend: NCCL when the training device is a CUDA GPU (each process on its local GPU, ``LOCAL_RANK``), gloo
otherwise. Ranks are global and nothing assumes one node. Without torchrun's environment (``WORLD_SIZE`` unset
or 1) nothing here does anything.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..models.device import activate


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")     # this process's device (collectives' tensors live there)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device = torch.device("cpu")) -> DistContext:
    """Join the process group torchrun describes in the environment (once), for a model on ``device``; a single
    process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=device)
    activate(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of a few floats over all ranks (float64)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
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
