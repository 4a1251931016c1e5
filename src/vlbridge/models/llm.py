"""The language model: any ``AutoModelForCausalLM``, by name/path or built from a config dict, with the attention
kernel ``LLMConfig.attn_implementation`` names (sdpa by default; flash-attention when installed)."""
from __future__ import annotations

import importlib.util

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from ..config import LLMConfig
from ..errors import UserError


def check_attention(name: str) -> None:
    """Fail early, with what to install, when a flash-attention kernel is asked for and is not there."""
    package = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise UserError(f"llm.attn_implementation {name!r} needs the {package} package (pip install flash-attn, on a "
                        "CUDA machine); use 'sdpa' otherwise")


def build_llm(cfg: LLMConfig, vocab_size: int | None = None) -> nn.Module:
    check_attention(cfg.attn_implementation)
    if cfg.name_or_path:
        return AutoModelForCausalLM.from_pretrained(cfg.name_or_path, dtype=torch.float32,
                                                    attn_implementation=cfg.attn_implementation)
    if "model_type" not in cfg.arch:
        raise UserError("llm.arch needs a model_type (e.g. 'llama') when name_or_path is None")
    arch = dict(cfg.arch)
    if vocab_size is not None:
        arch["vocab_size"] = vocab_size
    hf_config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    return AutoModelForCausalLM.from_config(hf_config, attn_implementation=cfg.attn_implementation)
