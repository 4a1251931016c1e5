"""FSDP2 sharding (``--train.strategy fsdp``): parameters, gradients and optimizer state split across processes.

    torchrun --nproc-per-node 8 -m vlbridge train --preset clip-qwen2 --train.strategy fsdp ...

``torch.distributed.fsdp.fully_shard`` is applied bottom-up: each LLM decoder layer, each encoder block when the
encoder trains, then the whole model (its connector, embeddings, LM head and the encoder's remaining weights).
Each unit's weights are all-gathered just before its forward and backward and freed after, so a process holds
1/N of every sharded weight, gradient and AdamW state plus one unit's full weights at a time. Frozen weights are
sharded too (the LLM of the align stage, the base weights under LoRA), except a frozen vision encoder: ranks
look up different images in the feature cache and would call it a different number of times, so it stays whole
(replicated, no collectives) on every process.

Precision: ``--train.precision bf16`` becomes FSDP's ``MixedPrecisionPolicy`` (weights all-gathered in bf16 for
compute, gradients reduced in fp32, sharded fp32 master weights); fp16 adds a sharded gradient scaler.

Checkpoints keep the single-process layout: ``model/model.safetensors`` holds the gathered full weights and
``optimizer.safetensors`` the gathered optimizer state keyed by parameter index as ``optimizer.state_dict()``
numbers them, so an FSDP checkpoint resumes under FSDP, DDP or one process alike. Gathering happens on rank 0's
CPU (``cpu_offload``): rank 0 needs host memory for the full model and its optimizer state while it writes.
Every rank reads the checkpoint when resuming, so on several nodes the run directory must be on a shared
filesystem.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from ..errors import UserError
from ..models.compile import decoder_layers
from ..models.precision import DTYPES, grad_scaler
from .distributed import DistContext

GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)     # full tensors, on rank 0's CPU


def trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class Sharded:
    name = "fsdp"
    every_rank_forwards = True           # the weights are spread: every forward and every save needs all ranks

    def __init__(self, ctx: DistContext, device: torch.device, precision: str):
        self.ctx, self.device, self.precision = ctx, device, precision
        self.units: list[str] = []

    def policy(self) -> MixedPrecisionPolicy:
        if self.precision == "fp32":
            return MixedPrecisionPolicy()
        return MixedPrecisionPolicy(param_dtype=DTYPES[self.precision], reduce_dtype=torch.float32)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Shard ``model`` in place (call after freezing, LoRA, storage dtypes and activation checkpointing)."""
        if getattr(model, "_added_row_hooks", None):
            raise UserError("--train.strategy fsdp: this stage trains only some rows of the embedding matrix (a "
                            "gradient mask on the full matrix), which sharding cannot keep; use --train.strategy ddp")
        if model.cfg.llm.dtype != "fp32":
            raise UserError("--train.strategy fsdp keeps sharded fp32 weights (each process stores 1/N of them) and "
                            "computes in --train.precision: drop --model.llm.dtype")
        mesh = init_device_mesh(self.device.type, (self.ctx.world,))
        policy = self.policy()
        ignored: set[nn.Parameter] = set()
        if not trains(model.vision):                 # whole on every rank: the feature cache skips it per rank
            model.vision.to(self.device)
            ignored = set(model.vision.parameters())
        else:
            blocks = decoder_layers(model.vision.model)
            for block in blocks:
                fully_shard(block, mesh=mesh, mp_policy=policy)
            self.units.append(f"{len(blocks)} encoder blocks")
        layers = decoder_layers(model.llm)
        if not layers:
            raise UserError(f"--train.strategy fsdp: {type(model.llm).__name__} names no decoder layer class in "
                            "_no_split_modules, so there are no layers to shard")
        for layer in layers:
            fully_shard(layer, mesh=mesh, mp_policy=policy)
        self.units.append(f"{len(layers)} LLM decoder layers")
        root_policy = dataclasses.replace(policy, cast_forward_inputs=False)     # pixels reach the encoder as given
        fully_shard(model, mesh=mesh, mp_policy=root_policy, ignored_params=ignored or None)
        self.units.append("the rest (connector, embeddings, head)")
        for buffer in model.buffers():                # buffers of ignored or unsharded modules
            buffer.data = buffer.data.to(self.device)
        self.model = model
        return model

    def describe(self) -> str:
        return "fsdp: sharded " + ", ".join(self.units)

    def accumulating(self):
        """Micro-batches before the step's last keep unsharded gradients instead of reduce-scattering them."""
        @contextlib.contextmanager
        def no_sync():
            self.model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.model.set_requires_gradient_sync(True)
        return no_sync()

    def autocast(self):
        return contextlib.nullcontext()            # the mixed-precision policy casts per unit

    def scaler(self):
        return grad_scaler(self.device, self.precision, sharded=True)

    def fused_optimizer(self) -> bool:
        return self.device.type == "cuda"          # fused AdamW's CPU kernel takes plain tensors only

    # ---- checkpoints in the single-process layout ------------------------------------------------------
    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """Full weights on rank 0 (every rank must call this); {} on the other ranks."""
        return get_model_state_dict(model, options=GATHERED)

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The gathered optimizer state as ``optimizer.state_dict()`` numbers parameters (every rank calls this;
        rank 0 gets it, the others an empty state)."""
        full = get_optimizer_state_dict(model, optimizer, options=GATHERED)
        index = {name: i for i, name in enumerate(parameter_names(model, optimizer))}
        groups, start = [], 0
        for group, saved in zip(optimizer.param_groups, full.get("param_groups", optimizer.param_groups)):
            n = len(group["params"])
            groups.append({**{k: v for k, v in saved.items() if k != "params"}, "params": list(range(start, start + n))})
            start += n
        return {"state": {index[name]: state for name, state in full.get("state", {}).items()}, "param_groups": groups}

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Shard a checkpoint's (index-keyed, full) optimizer state back onto this rank's parameters."""
        names = parameter_names(model, optimizer)
        groups, start = [], 0
        for group in state["param_groups"]:
            n = len(group["params"])
            groups.append({**group, "params": names[start:start + n]})
            start += n
        full = {"state": {names[int(i)]: s for i, s in state["state"].items()}, "param_groups": groups}
        set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters in its order (the index ``optimizer.state_dict()`` gives each)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
