"""Mixed precision: what the forward computes in, what the weights are stored in, and the fp16 gradient scaler.

- ``--train.precision`` (``fp32``/``bf16``/``fp16``; ``auto`` = bf16 on CUDA, fp32 elsewhere: bf16 matmuls are
  several times slower than fp32 on CPUs without native bf16) runs the forward under ``torch.autocast``, with
  the trained weights, their gradients and the optimizer state kept in fp32 (master weights). fp16 adds a
  gradient scaler (``torch.amp.GradScaler``), which is a pass-through for the other precisions.
- ``--model.vision.dtype`` / ``--model.llm.dtype`` store a part's *frozen* weights in bf16 or fp16 (half the
  memory); anything that trains stays fp32, and a part that trains whole cannot be stored in half precision.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..config import PRECISIONS
from ..errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA (fp16 on GPUs without bf16), fp32 on the CPU and MPS; other names as given."""
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The context the forward runs in: autocast to bf16/fp16 on ``device``, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str, sharded: bool = False):
    """A gradient scaler, enabled for fp16 only (bf16 has fp32's range). ``sharded``: FSDP's variant, which
    agrees across ranks on whether a step had an inf/NaN gradient."""
    if sharded:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
        return ShardedGradScaler(device.type, enabled=precision == "fp16")
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def store_frozen(module: nn.Module, dtype: torch.dtype, what: str) -> int:
    """Cast ``module``'s frozen floating-point parameters to ``dtype``; returns how many were cast. Trainable
    parameters stay fp32 (master weights); a module that trains whole cannot be stored in half precision."""
    params = [p for p in module.parameters() if p.is_floating_point()]
    if dtype == torch.float32 or not params:
        return 0
    if all(p.requires_grad for p in params):
        raise UserError(f"{what} is stored in {dtype} but trains in this stage: trained weights stay fp32 "
                        f"(use --train.precision bf16 for mixed precision, and keep {what} in fp32)")
    frozen = [p for p in params if not p.requires_grad]
    for p in frozen:
        p.data = p.data.to(dtype)
    return len(frozen)


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype most of ``module``'s floating-point weights are stored in (fp32 when it has none)."""
    counts: dict[torch.dtype, int] = {}
    for p in module.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else torch.float32
