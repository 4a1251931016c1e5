"""Will it fit? A memory plan of a training run, built on the meta device (shapes only: nothing is allocated and
no weights are read, so a 70B model plans in seconds on a laptop from its ``config.json`` alone).

Per device it counts, for the run config's stage (what trains, LoRA, storage dtypes), strategy and precision:

- weights: trained ones in fp32 (master weights), frozen ones in their storage dtype (``--model.*.dtype``);
  under FSDP everything but a frozen encoder is divided by the number of processes, plus the all-gathered
  units in flight (the current and the prefetched decoder layer, in the compute dtype);
- gradients (fp32, per trained weight; DDP keeps a second copy in its all-reduce buckets; FSDP shards them);
- AdamW state (two fp32 tensors per trained weight; sharded under FSDP);
- autocast's bf16/fp16 copies of the trained weights (kept for the step by ``torch.autocast``);
- activations of one micro-batch: what autograd saves for the backward pass, *measured* on the meta device
  for one LLM decoder layer at the batch and sequence length (times the number of layers, or, with activation
  checkpointing, one layer's input per layer plus one layer recomputed), the trained encoder and connector, and
  the LM head's logits on the scored (answer) positions. Attention is measured as a fused kernel keeps it, with
  grouped k/v heads counted expanded (a slight over-estimate).

Not counted: the CUDA context and allocator fragmentation (add ~1-2 GiB and ~10%), dataloader memory, NCCL
buffers. The step-time line is arithmetic (6 x parameters x tokens, plus attention), at an assumed fraction of
the GPU's peak: read it as an order of magnitude.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import AutoConfig, AutoModelForCausalLM

from ..config import RunConfig, VisionConfig
from ..connectors import CONNECTORS, build_connector
from ..models.compile import decoder_layers
from ..models.precision import DTYPES
from ..models.vision import VisionTower
from ..models.vlm import MODULES
from .stages import _matches

GIB = 2 ** 30
GPU_SIZES = (24, 40, 80)


@dataclass
class Part:
    name: str
    params: int
    trainable: int
    frozen_bytes: int                 # bytes per frozen parameter (its storage dtype)
    sharded: bool                     # divided over the processes under FSDP


@dataclass
class Plan:
    parts: list[Part]
    nproc: int
    strategy: str
    precision: str
    batch_size: int
    seq_len: int
    activations: dict[str, int]       # bytes per device, by part
    gather_bytes: int                 # FSDP: unsharded units in flight
    flops_per_step: float
    notes: list[str] = field(default_factory=list)

    def memory(self) -> dict[str, float]:
        """Bytes per device, by kind."""
        fsdp = self.strategy == "fsdp" and self.nproc > 1
        share = lambda part: 1 / self.nproc if fsdp and part.sharded else 1.0
        trained = sum(p.trainable * share(p) for p in self.parts)
        weights = sum((p.trainable * 4 + (p.params - p.trainable) * p.frozen_bytes) * share(p) for p in self.parts)
        grads = trained * 4 * (2 if self.strategy == "ddp" and self.nproc > 1 else 1)
        out = {"weights": weights, "gradients": grads, "optimizer (AdamW)": trained * 8}
        if self.precision in ("bf16", "fp16") and not fsdp:
            out["autocast weight copies"] = trained * 2
        if fsdp:
            out["all-gathered units in flight"] = self.gather_bytes
        out.update({f"activations: {k}": v for k, v in self.activations.items()})
        return out

    def total(self) -> float:
        return sum(self.memory().values())

    def seconds_per_step(self, tflops: float, mfu: float) -> float:
        return self.flops_per_step / (self.nproc * tflops * 1e12 * mfu)

    def table(self, tflops: float = 312.0, mfu: float = 0.4) -> str:
        lines = [f"plan: {self.nproc} process(es), strategy {self.strategy}, precision {self.precision}, "
                 f"micro-batch {self.batch_size} x {self.seq_len} tokens per process", "",
                 f"  {'part':<10} {'parameters':>15} {'trainable':>15}"]
        for p in self.parts:
            lines.append(f"  {p.name:<10} {p.params:>15,} {p.trainable:>15,}")
        lines.append(f"  {'total':<10} {sum(p.params for p in self.parts):>15,} "
                     f"{sum(p.trainable for p in self.parts):>15,}")
        lines += ["", "  memory per device"]
        for kind, value in self.memory().items():
            lines.append(f"    {kind:<34} {value / GIB:>8.2f} GiB")
        total = self.total()
        lines.append(f"    {'total':<34} {total / GIB:>8.2f} GiB")
        fits = ", ".join(f"{g} GB {'yes' if total * 1.1 + 1.5 * GIB <= g * GIB else 'no'}" for g in GPU_SIZES)
        lines += [f"  fits (with ~10% + 1.5 GiB for the CUDA context and fragmentation): {fits}", "",
                  f"  compute: {self.flops_per_step / 1e15:.2f} PFLOP per optimizer step (all processes); at "
                  f"{mfu:.0%} of {tflops:g} TFLOP/s per GPU: {self.seconds_per_step(tflops, mfu):.2f} s per step"]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---- building on the meta device ----------------------------------------------------------------------------

def hf_config(name_or_path: str):
    return AutoConfig.from_pretrained(name_or_path)


def vision_on_meta(cfg: VisionConfig) -> VisionTower:
    """The encoder from its config alone (a checkpoint dir needs only config.json)."""
    if cfg.name_or_path:
        full = hf_config(cfg.name_or_path)
        sub = getattr(full, "vision_config", None) or full
        cfg = dataclasses.replace(cfg, name_or_path=None, arch=sub.to_dict(), preprocess="resize")
    with torch.device("meta"):
        return VisionTower(cfg)


def llm_on_meta(cfg) -> nn.Module:
    config = hf_config(cfg.name_or_path) if cfg.name_or_path else None
    if config is None:
        arch = dict(cfg.arch)
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def saved_bytes(fn) -> int:
    """Bytes autograd keeps for the backward pass while ``fn()`` runs (views counted once; the weights it saves
    are not activations and are left out)."""
    kept: dict[int, torch.Tensor] = {}

    def pack(t):
        base = t._base if t._base is not None else t
        if not isinstance(base, nn.Parameter):
            kept[id(base)] = base
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(t.numel() * t.element_size() for t in kept.values())


class FusedAttention(TorchFunctionMode):
    """On meta, PyTorch's SDPA falls back to the math kernel, which keeps the [T, T] attention matrix for the
    backward; a GPU runs the fused (flash / memory-efficient) kernel, which keeps only q, k, v, the output and the
    log-sum-exp. This routes causal SDPA calls to the flash kernel's meta implementation so the measurement is
    what a GPU keeps."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention and kwargs.get("attn_mask") is None and len(args) <= 3:
            q, k, v = args
            if k.shape[1] != q.shape[1]:                          # grouped-query attention
                k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
            causal = bool(kwargs.get("is_causal", False))
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal,
                                                                     scale=kwargs.get("scale"))[0]
        return func(*args, **kwargs)


def layer_activations(llm: nn.Module, batch: int, seq: int, dtype: torch.dtype, trains: bool) -> int:
    """Saved bytes of one decoder layer at [batch, seq] (measured on meta, attention as a fused kernel); a frozen
    layer keeps less (no input is needed for its weights' gradients)."""
    layer = decoder_layers(llm)[0]
    for p in layer.parameters():
        p.requires_grad_(trains)
    hidden = llm.config.get_text_config().hidden_size
    x = torch.zeros(batch, seq, hidden, device="meta", dtype=dtype, requires_grad=True)
    positions = torch.arange(seq, device="meta")[None].expand(batch, seq)
    cos, sin = llm.get_decoder().rotary_emb(x, positions)
    with FusedAttention():
        return saved_bytes(lambda: layer(x, position_embeddings=(cos, sin), attention_mask=None,
                                         position_ids=positions))


def head_activations(llm: nn.Module, scored: int, dtype: torch.dtype) -> int:
    """Saved bytes of the final norm + LM head + fp32 cross-entropy on ``scored`` positions."""
    hidden = llm.config.get_text_config().hidden_size
    x = torch.zeros(1, scored, hidden, device="meta", dtype=dtype, requires_grad=True)
    targets = torch.zeros(scored, dtype=torch.long, device="meta")

    def run():
        logits = llm.get_output_embeddings()(llm.get_decoder().norm(x))[0]
        torch.nn.functional.cross_entropy(logits.float(), targets)
    return saved_bytes(run)


def lora_parameters(llm: nn.Module, r: int, targets: list[str]) -> int:
    return sum(r * (m.in_features + m.out_features) for name, m in llm.named_modules()
               if isinstance(m, nn.Linear) and name.split(".")[-1] in targets)


def make_plan(cfg: RunConfig, nproc: int = 1, seq_len: int | None = None, images_per_record: int = 1,
              answer_fraction: float = 0.1) -> Plan:
    tc, mc = cfg.train, cfg.model
    precision = "bf16" if tc.precision == "auto" else tc.precision       # planning for CUDA
    dtype = DTYPES[precision]
    seq = seq_len or mc.llm.max_length
    notes = []
    vision = vision_on_meta(mc.vision)
    llm = llm_on_meta(mc.llm)
    llm_dim = llm.get_input_embeddings().embedding_dim
    with torch.device("meta"):
        connector = build_connector(mc.connector.name, mc.connector.options, vision.out_dim, llm_dim, vision.grid)
    cls = CONNECTORS[mc.connector.name]
    stage = cls.stages(cls.Options(**mc.connector.options))[tc.stage]
    if tc.train_vision and tc.stage == "instruct":
        stage = stage.with_trains("vision")
    modules = {"vision": vision, "connector": connector, "llm": llm}
    parts = []
    for name in MODULES:
        named = [(f"{name}.{n}", p) for n, p in modules[name].named_parameters()]
        total = sum(p.numel() for _, p in named)
        trainable = sum(p.numel() for n, p in named if _matches(n, stage.trains) and not _matches(n, stage.frozen))
        if name == "llm" and tc.lora_r and trainable:
            trainable = lora_parameters(llm, tc.lora_r, tc.lora_targets)
            total += trainable
        storage = 4 if name == "connector" else DTYPES[getattr(mc, name).dtype].itemsize
        parts.append(Part(name, total, trainable, storage, sharded=not (name == "vision" and not trainable)))
    trains = {p.name: p.trainable > 0 for p in parts}

    n_layers = len(decoder_layers(llm))
    per_layer = layer_activations(llm.to(dtype), tc.batch_size, seq, dtype, trains["llm"] and not tc.lora_r)
    hidden_bytes = tc.batch_size * seq * llm_dim * dtype.itemsize
    if "llm" in tc.activation_checkpointing:
        llm_act = n_layers * hidden_bytes + per_layer
    else:
        llm_act = n_layers * per_layer
    activations = {"llm layers": llm_act,
                   "lm head (scored positions)": head_activations(llm, max(1, int(tc.batch_size * seq * answer_fraction)),
                                                                  dtype)}
    n_images = tc.batch_size * images_per_record
    if trains["vision"]:
        vision.to(dtype)
        pixels = torch.zeros(n_images, 3, vision.image_size, vision.image_size, device="meta", dtype=dtype)
        for p in vision.parameters():
            p.requires_grad_(True)
        activations["vision encoder"] = saved_bytes(lambda: vision.encode(pixels))
        if "vision" in tc.activation_checkpointing:
            notes.append("the encoder's activations are shown without checkpointing (an upper bound)")
    if trains["connector"]:
        feats = vision.encode(torch.zeros(n_images, 3, vision.image_size, vision.image_size, device="meta",
                                          dtype=dtype)).to(dtype)
        feats.features.requires_grad_(True)
        try:
            activations["connector"] = saved_bytes(lambda: connector.to(dtype)(feats))
        except Exception as e:                                     # connectors with data-dependent steps
            notes.append(f"connector activations not measured on meta ({type(e).__name__})")
    if any(trains.values()) and not trains["llm"] and not trains["connector"]:
        notes.append("nothing upstream of the LLM trains")

    layer_params = sum(p.numel() for p in decoder_layers(llm)[0].parameters())
    gather = 2 * layer_params * dtype.itemsize
    n_llm = sum(p.numel() for p in llm.parameters())
    n_vis = parts[0].params
    tokens = tc.batch_size * seq * nproc
    attention = 2 * n_layers * seq * llm_dim                      # per token, forward, causal half
    # forward 1 pass; backward: input gradients 1 pass (when anything upstream trains), weight gradients 1 pass
    # (when the LLM's own weights train; LoRA's are negligible)
    llm_passes = 1 + (1 if any(trains.values()) else 0) + (1 if trains["llm"] and not tc.lora_r else 0)
    llm_passes += 1 if "llm" in tc.activation_checkpointing else 0
    flops = 2 * (n_llm + attention) * tokens * llm_passes
    visual = vision.grid[0] * vision.grid[1]
    flops += 2 * n_vis * visual * n_images * nproc * (3 if trains["vision"] else 1)
    if not trains["vision"]:
        notes.append("a frozen encoder's features are cached after the first epoch (its compute is then ~0)")
    if seq < connector.num_tokens():
        notes.append(f"seq_len {seq} is shorter than one image's {connector.num_tokens()} visual tokens")
    return Plan(parts, nproc, tc.strategy, precision, tc.batch_size, seq, activations, gather, flops, notes)
