"""The language model: any ``AutoModelForCausalLM``, by name/path or built from a config dict."""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from ..config import LLMConfig
from ..errors import UserError


def build_llm(cfg: LLMConfig, vocab_size: int | None = None) -> nn.Module:
    if cfg.name_or_path:
        return AutoModelForCausalLM.from_pretrained(cfg.name_or_path, dtype=torch.float32)
    if "model_type" not in cfg.arch:
        raise UserError("llm.arch needs a model_type (e.g. 'llama') when name_or_path is None")
    arch = dict(cfg.arch)
    if vocab_size is not None:
        arch["vocab_size"] = vocab_size
    hf_config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    return AutoModelForCausalLM.from_config(hf_config)
