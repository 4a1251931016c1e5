"""How the training loop's model is spread over processes: a strategy object beside the one loop.

The loop asks its strategy for these and is otherwise the same for all of them:

- ``wrap(model)``: the module the training forward goes through (the model; DDP around it; the model sharded in
  place by FSDP);
- ``accumulating()``: the context of the micro-batches before the last of an optimizer step (no gradient sync);
- ``autocast()``: the precision context of the forward;
- ``model_state(model)`` / ``optimizer_state(model, optimizer)``: full (gathered) weights and optimizer state for
  a checkpoint, in the layout a single process writes, so checkpoints look the same whatever the strategy;
  ``load_optimizer_state`` puts a checkpoint's optimizer state back (sharded again under FSDP);
- ``clip_grad_norm``: the global gradient norm, clipped;
- ``scaler()``, ``fused_optimizer()``, ``describe()``: the fp16 gradient scaler it needs, whether AdamW's fused
  kernel takes its parameters, a line for the log.

``Replicated`` covers one process and DDP (``--train.strategy ddp``, every process holds the whole model);
``train/fsdp.py`` shards it (``--train.strategy fsdp``). Under FSDP every rank takes part in every forward and in
gathering what is saved (``every_rank_forwards``), so validation runs on all ranks there.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..models.precision import autocast, grad_scaler
from .distributed import DistContext


class Replicated:
    """One process, or DDP under torchrun (``find_unused_parameters`` as ``--train.ddp_find_unused_parameters``)."""

    name = "ddp"
    every_rank_forwards = False          # the model is whole on rank 0: it validates and saves alone

    def __init__(self, ctx: DistContext, device: torch.device, precision: str, find_unused_parameters: bool = True):
        self.ctx, self.device, self.precision = ctx, device, precision
        self.find_unused_parameters = find_unused_parameters
        self.forward: nn.Module | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        """Place the model on the device; under torchrun wrap it in DDP, which broadcasts rank 0's weights.
        Call after the stage has frozen what it freezes (DDP registers the parameters that require grad)."""
        model.to(self.device)
        self.forward = model
        if self.ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(model, device_ids=ids,
                                                   find_unused_parameters=self.find_unused_parameters)
        return self.forward

    def describe(self) -> str:
        return "ddp: the whole model on every process, gradients all-reduced once per optimizer step"

    def accumulating(self):
        """No all-reduce for a micro-batch that is not the step's last (DDP syncs once per optimizer step)."""
        return self.forward.no_sync() if self.ctx.enabled else contextlib.nullcontext()

    def autocast(self):
        return autocast(self.device, self.precision)

    def scaler(self):
        return grad_scaler(self.device, self.precision)

    def fused_optimizer(self) -> bool:
        return True

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The weights to save; None = the model's own (it is whole on this process)."""
        return None

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf))


def make_strategy(name: str, ctx: DistContext, device: torch.device, precision: str,
                  find_unused_parameters: bool = True):
    """The strategy ``--train.strategy`` names; one process always runs ``Replicated`` (nothing to shard)."""
    if name == "fsdp" and ctx.enabled:
        from .fsdp import Sharded
        return Sharded(ctx, device, precision)
    return Replicated(ctx, device, precision, find_unused_parameters)
