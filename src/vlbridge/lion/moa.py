"""Mixture of adapters (MoA) with a task router, beside every FFN sublayer of a Hugging Face causal LM.

Each decoder layer's MLP module is wrapped by ``MoAFeedForward``, which holds the original as ``ffn`` and adds
K parallel adapters whose outputs are gated per channel by the sample's task type t::

    out = FFN(x) + sum_k G[t, k] * A_k(x),      A_k(x) = s_k * (W_up,k ReLU(W_down,k x + b_down,k) + b_up,k)

``x`` is the MLP's input: in pre-LN decoders (Llama, Qwen2, Mistral, Phi-3, GPT-2) that is LN(h), and the
decoder layer adds the residual h, so a layer computes ``h + FFN(LN(h)) + sum_k G[t, k] * A_k(LN(h))`` (LION's
T5 adapters read h before the FFN's norm; a wrapper of the MLP sees the normalised h). ``W_up`` and ``b_up``
start at zero, so a fresh model's outputs equal the base model's exactly; ``s_k`` is a learnable scalar (1).

The router is a gate table ``G [types, K, D]``: one per-channel gate vector per adapter, *chosen* by the task
type (not a softmax, not computed from hidden states), initialised one-hot: type t opens adapter min(t, K-1)
(K = 1: one adapter shared by every type). Types reach the wrapped layers through ``TaskRouter.routing``, a
context that holds one type per sample of the LLM calls inside it (a context variable: threads and async
requests keep their own); outside such a context every sample takes the default type.

Parameters are named ``moa_adapters.<k>.*`` and ``moa_router`` (stages select them by these names).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Sequence

import torch
from torch import nn

from ..errors import UserError

ADAPTERS = "moa_adapters"
ROUTER = "moa_router"


def is_moa_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a mixture of adapters (adapters or router)."""
    return f".{ADAPTERS}." in f".{name}" or name.endswith(ROUTER)


class TaskRouter:
    """The task types a model routes by, and the per-sample types of the LLM calls in progress."""

    def __init__(self, types: Sequence[str], default: str):
        if default not in types:
            raise ValueError(f"default task type {default!r} is not one of {list(types)}")
        self.types, self.default = tuple(types), default
        self._active: contextvars.ContextVar = contextvars.ContextVar("moa_routes", default=None)

    def __deepcopy__(self, memo) -> "TaskRouter":
        return TaskRouter(self.types, self.default)       # a context variable cannot be copied: a fresh one

    def index(self, name: str) -> int:
        if name not in self.types:
            raise ValueError(f"unknown task type {name!r}; types: {', '.join(self.types)}")
        return self.types.index(name)

    @contextlib.contextmanager
    def routing(self, types: Sequence[str] | None):
        """Route sample i of every LLM call inside by ``types[i]`` (None: the default type for all)."""
        if types is None:
            yield
            return
        token = self._active.set(torch.tensor([self.index(t) for t in types], dtype=torch.long))
        try:
            yield
        finally:
            self._active.reset(token)

    def routes(self, batch: int) -> torch.Tensor:
        """Type index per sample [batch] of the current LLM call."""
        active = self._active.get()
        if active is None:
            return torch.full((batch,), self.index(self.default), dtype=torch.long)
        if len(active) != batch:
            raise ValueError(f"task routing was set for {len(active)} samples but the LLM ran on {batch}")
        return active


class Adapter(nn.Module):
    """``s * (W_up ReLU(W_down x + b_down) + b_up)``, W_up and b_up zero-initialised."""

    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.w_down = nn.Linear(width, bottleneck)      # default Linear init (Kaiming-uniform), bias zeroed
        self.w_up = nn.Linear(bottleneck, width)
        self.scale = nn.Parameter(torch.ones(1))
        with torch.no_grad():
            self.w_down.bias.zero_()
            self.w_up.weight.zero_()
            self.w_up.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.w_up(torch.relu(self.w_down(x)))       # [..., D]


class MoAFeedForward(nn.Module):
    """A decoder layer's MLP with K routed parallel adapters beside it."""

    def __init__(self, ffn: nn.Module, width: int, n_adapters: int, bottleneck: int, router: TaskRouter):
        super().__init__()
        self.ffn = ffn
        self.router = router                              # shared by every layer (not a module: no parameters)
        setattr(self, ADAPTERS, nn.ModuleList(Adapter(width, bottleneck) for _ in range(n_adapters)))
        gates = torch.zeros(len(router.types), n_adapters, width)         # [types, K, D]
        for t in range(len(router.types)):
            gates[t, min(t, n_adapters - 1)] = 1.0                         # one-hot: type t -> adapter t
        setattr(self, ROUTER, nn.Parameter(gates))
        getattr(self, ROUTER).no_weight_decay = True                       # read by train.stages.param_groups

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor | None:
        """sum_k G[t_b, k] * A_k(x_b) for x [B, ..., D]; None when every gate of the batch is zero (then nothing is
        added, exactly as adding the zeros would).

        Computed fused: the open adapters' down projections as one matmul, then per task type present one up
        matmul whose weight is the gated, scaled up projections side by side (G[t, k] * s_k * W_up,k), on that
        type's samples. Adapters closed for every sample of the batch are skipped while the router is frozen."""
        gate_table = getattr(self, ROUTER)                                  # [types, K, D]
        routes = self.router.routes(x.shape[0]).to(gate_table.device)       # [B]
        present = routes.unique().tolist()
        adapters = list(getattr(self, ADAPTERS))
        open_k = [k for k in range(len(adapters))
                  if gate_table.requires_grad or bool(gate_table[present, k].any())]
        if not open_k:
            return None
        down_w = torch.cat([adapters[k].w_down.weight for k in open_k])     # [K' r, D]
        down_b = torch.cat([adapters[k].w_down.bias for k in open_k])
        h = torch.relu(nn.functional.linear(x, down_w, down_b))             # [B, ..., K' r]
        up_w = torch.stack([adapters[k].w_up.weight for k in open_k])       # [K', D, r]
        up_b = torch.stack([adapters[k].w_up.bias for k in open_k])         # [K', D]
        scale = torch.cat([adapters[k].scale for k in open_k])[:, None]     # [K', 1]
        out = None
        for t in present:
            g = gate_table[t, open_k] * scale                                # [K', D]
            weight = (g[:, :, None] * up_w).permute(1, 0, 2).flatten(1)      # [D, K' r]
            bias = (g * up_b).sum(0)                                         # [D]
            if len(present) == 1:
                return nn.functional.linear(h, weight.to(h.dtype), bias.to(h.dtype))
            rows = (routes == t).nonzero().flatten().to(x.device)
            y = nn.functional.linear(h[rows], weight.to(h.dtype), bias.to(h.dtype))
            out = (x.new_zeros(x.shape) if out is None else out).index_copy(0, rows, y)
        return out

    def forward(self, x: torch.Tensor, *args, **kwargs):
        out = self.ffn(x, *args, **kwargs)
        extra = self.adapter_output(x)
        if extra is None:
            return out
        if isinstance(out, tuple):                                         # MLPs that also return aux outputs
            return (out[0] + extra,) + tuple(out[1:])
        return out + extra


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The LLM's stack of decoder layers: the first ModuleList whose every layer has an ``mlp`` submodule."""
    for module in llm.modules():
        if isinstance(module, nn.ModuleList) and len(module) and \
                all(isinstance(getattr(layer, "mlp", None), nn.Module) for layer in module):
            return module
    model_type = getattr(getattr(llm, "config", None), "model_type", type(llm).__name__)
    raise UserError(f"mixture of adapters: the LLM {type(llm).__name__} (model_type {model_type!r}) has no stack of "
                     "decoder layers with an `mlp` submodule (Llama, Qwen2, Mistral, Phi-3 and GPT-2 style models "
                     "have one); use adapters 0 with this LLM")


def hidden_width(llm: nn.Module) -> int:
    config = llm.config.get_text_config() if hasattr(llm.config, "get_text_config") else llm.config
    return int(config.hidden_size)


def install_moa(llm: nn.Module, n_adapters: int, bottleneck: int, router: TaskRouter) -> list[MoAFeedForward]:
    """Wrap the MLP of every decoder layer of ``llm`` (in place); returns the wrappers."""
    if n_adapters < 1 or bottleneck < 1:
        raise UserError(f"mixture of adapters: need >= 1 adapter and bottleneck >= 1 (got {n_adapters}, {bottleneck})")
    layers = decoder_layers(llm)
    if any(isinstance(layer.mlp, MoAFeedForward) for layer in layers):
        raise ValueError("mixture of adapters: this LLM's MLPs are already wrapped")
    width = hidden_width(llm)
    wrappers = []
    for layer in layers:
        layer.mlp = MoAFeedForward(layer.mlp, width, n_adapters, bottleneck, router)
        wrappers.append(layer.mlp)
    return wrappers
