"""Where a model runs: one ``torch.device`` chosen once and threaded through training, evaluation and serving.

``resolve_device("auto")`` picks CUDA, then Apple's MPS, then the CPU; under ``torchrun`` each process takes its
local accelerator (``cuda:LOCAL_RANK``). Everything else asks the model (``VLBridgeModel.device``) or the tensors
in flight where to put what it creates, so no code calls ``.cuda()``. The helpers below read and reset the
peak-memory counters and RNG state of whichever device it is (the CPU's peak is the process's resident set).
"""
from __future__ import annotations

import os
import resource
import sys

import torch

from ..config import DEVICES
from ..errors import UserError


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device ``name`` means here: ``auto`` = cuda, then mps, then cpu; ``cuda`` under torchrun is the
    process's local GPU (``LOCAL_RANK``, or ``local_rank``). An accelerator that is not there is a UserError."""
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose from {', '.join(DEVICES)}")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device 'cuda': no CUDA GPU is visible to this torch build "
                            f"(torch {torch.__version__}); use --device cpu or auto")
        if ":" in name:
            return torch.device(name)
        rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))
        if rank >= torch.cuda.device_count():
            raise UserError(f"process with local rank {rank} has no GPU: {torch.cuda.device_count()} visible "
                            f"(torchrun --nproc-per-node must not exceed the GPUs per node)")
        return torch.device("cuda", rank)
    if kind == "mps":
        if not mps_available():
            raise UserError("device 'mps': Apple's Metal backend is not available here; use --device cpu or auto")
        return torch.device("mps")
    return torch.device("cpu")


def activate(device: torch.device) -> None:
    """Make ``device`` the current one of its kind (so collectives and kernels without an explicit device use it)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timing); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process on ``device`` in MiB: the CUDA allocator's peak, MPS's current allocation, or
    (CPU) the process's peak resident set size, which includes the interpreter and libraries."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    if device.type == "mps":
        return torch.mps.current_allocated_memory() / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss           # KiB on Linux, bytes on macOS
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 2 ** 10


def rng_state(device: torch.device) -> torch.Tensor | None:
    """The RNG state of an accelerator (dropout, sampling on it); None on the CPU (saved separately)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def set_rng_state(device: torch.device, state: torch.Tensor | None) -> None:
    if state is None:
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)


def seed_device(device: torch.device, seed: int) -> None:
    """``torch.manual_seed`` seeds the CPU and every CUDA device; MPS has its own generator."""
    if device.type == "mps":
        torch.mps.manual_seed(seed)
