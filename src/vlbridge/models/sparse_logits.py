"""Training logits only where a target is scored: the LM head runs on answer positions, not on every position.

In instruction data most positions (image tokens, prompts, padding) carry no target, yet a causal LM's forward
computes a [T, vocab] logit row for each and the softmax backward touches them all. Splitting the model into
its decoder (hidden states) and its output embedding lets the head run on the scored rows alone (on ShapesWorld
a small share of the positions; docs/notes/speed.md). This is only valid when the model's logits are
exactly ``output_embedding(decoder(x))``; models that post-process logits (soft-capping, scaling) are not, so
``head_is_separable`` checks that equality once on the model itself and the caller falls back otherwise.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def head_is_separable(llm: nn.Module) -> bool:
    """Whether ``llm(x).logits == get_output_embeddings()(get_decoder()(x).last_hidden_state)`` (checked in eval
    mode on a few of the model's own embeddings)."""
    try:
        decoder, head = llm.get_decoder(), llm.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    if decoder is None or head is None or decoder is llm:
        return False
    was_training = llm.training
    llm.eval()
    try:
        x = llm.get_input_embeddings().weight[:4].detach()[None]                    # [1, 4, D]
        full = llm(inputs_embeds=x, use_cache=False).logits
        split = head(decoder(inputs_embeds=x, use_cache=False).last_hidden_state)
        return full.shape == split.shape and torch.allclose(full, split, rtol=1e-4, atol=1e-5)
    except Exception:                   # any model whose pieces do not compose this way: use the full forward
        return False
    finally:
        llm.train(was_training)


def last_hidden(llm: nn.Module, **forward_kwargs) -> torch.Tensor:
    """The decoder's last hidden states [B, T, D] (what the LM head reads)."""
    return llm.get_decoder()(**forward_kwargs).last_hidden_state


def scored_logits(llm: nn.Module, scored: torch.Tensor, hidden: torch.Tensor | None = None,
                  **forward_kwargs) -> torch.Tensor:
    """Logits [n, V] of the positions where ``scored`` [B, T] is True (row-major order), from ``hidden`` [B, T, D]
    when given, else from a decoder pass over ``forward_kwargs``."""
    hidden = last_hidden(llm, **forward_kwargs) if hidden is None else hidden      # [B, T, D]
    return llm.get_output_embeddings()(hidden[scored])                             # [n, V]
