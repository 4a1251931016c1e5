"""Activation checkpointing: keep only each block's inputs in the forward pass and recompute the rest in backward.

- ``llm`` and ``vision`` use the Hugging Face model's own gradient-checkpointing support (per decoder layer /
  encoder block), non-reentrant so frozen inputs, LoRA and FSDP all work;
- ``connector`` checkpoints the blocks the connector lists in ``Connector.checkpoint_blocks`` (a Q-Former's or
  resampler's layers ...) with PyTorch's composable ``checkpoint``, which leaves parameter names unchanged, so
  checkpoints and saved models are the same with it on or off.

Losses and gradients are the same as without it (the recomputation is exact); what changes is memory (the
activations of the blocks are not kept) against one more forward pass of them per step.
"""
from __future__ import annotations

from torch import nn
from torch.distributed._composable import checkpoint

from ..errors import UserError


def checkpoint_hf_model(model: nn.Module, what: str) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UserError(f"--train.activation_checkpointing: {what} ({type(model).__name__}) has no gradient "
                        "checkpointing support in transformers")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):           # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def enable_activation_checkpointing(model, parts: list[str]) -> list[str]:
    """Turn on activation checkpointing for ``parts`` of a VLBridgeModel (llm, vision, connector); returns a line
    per part saying what is recomputed."""
    done = []
    for part in dict.fromkeys(parts):
        if part == "llm":
            base = model.llm.get_base_model() if model.lora else model.llm
            checkpoint_hf_model(base, "the LLM")
            done.append(f"llm: each of {base.config.get_text_config().num_hidden_layers} decoder layers")
        elif part == "vision":
            checkpoint_hf_model(model.vision.model, "the vision encoder")
            done.append("vision: each encoder block (while the encoder trains)")
        elif part == "connector":
            blocks = model.connector.checkpoint_blocks()
            if not blocks:
                raise UserError(f"--train.activation_checkpointing connector: the {model.cfg.connector.name!r} "
                                "connector has no repeated blocks to recompute")
            for block in blocks:
                checkpoint(block)
            done.append(f"connector: {len(blocks)} blocks")
        else:
            raise UserError(f"--train.activation_checkpointing: unknown part {part!r}; choose from llm, vision, "
                            "connector")
    return done
