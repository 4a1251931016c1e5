"""Regional compilation of the LLM: each decoder layer compiled in place with ``torch.compile``.

Compiling the repeated block instead of the whole model is PyTorch's recipe for short compile times: every
layer shares one compiled graph (same code, same guards), so the cost is paid once, not per layer. The layers
are found by the class names the model lists in ``_no_split_modules`` (``LlamaDecoderLayer``,
``Qwen2DecoderLayer``, ...), so any ``transformers`` causal LM works. ``nn.Module.compile`` keeps parameter
names unchanged: checkpoints and ``save_pretrained`` are the same as without it. Shapes are marked dynamic
(sequence lengths vary from batch to batch), so a new length does not trigger a recompile.

What it buys on CPU is fusion of the elementwise work between the matmuls (RMSNorm, RoPE, SiLU x up, the
residual adds); the first steps pay the compilation (``bench/train_step.py --compile`` measures both).
"""
from __future__ import annotations

from torch import nn

from ..errors import UserError


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    names = set(getattr(llm, "_no_split_modules", None) or [])
    return [m for m in llm.modules() if type(m).__name__ in names]


def compile_decoder_layers(llm: nn.Module) -> int:
    """Compile every decoder layer of ``llm`` in place; returns how many."""
    layers = decoder_layers(llm)
    if not layers:
        raise UserError(f"--train.compile: {type(llm).__name__} names no decoder layer class in "
                         f"_no_split_modules, so there is no repeated block to compile")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
