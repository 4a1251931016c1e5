"""Autoregressive generation for VLBridgeModel: KV cache or full recompute, greedy or sampling, batched.

Prompts are left-padded so every row's next token sits in the last column; positions count real tokens
only, so a left-padded row generates exactly what it would alone. ``use_cache=False`` recomputes the whole
sequence each step (the reference the KV-cache path is tested against). ``logits_processors`` are
callables ``(logits [B, V], generated [B, t]) -> logits`` (e.g. suppressing a vocabulary range).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import inspect

import torch
from transformers import DynamicCache


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    use_cache: bool = True


def cache_kwargs(llm, cache) -> dict:
    """The KV-cache keyword of this transformers version: ``cache`` (5.x; ``past_key_values`` is deprecated
    there) or ``past_key_values`` (4.x)."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm        # through a peft wrapper
    name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    return {name: cache}


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p          # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def generate(model, input_ids: Sequence[torch.Tensor], pixel_values: torch.Tensor | None,
             gen: GenerationConfig = GenerationConfig(), generator: torch.Generator | None = None,
             logits_processors: Sequence[Callable] = (), stop_token_ids: Sequence[int] | None = None) -> list[list[int]]:
    """Returns the generated ids per row, without the stop token."""
    s, _ = model.embed(list(input_ids), None, pixel_values, padding_side="left")
    return generate_from(model, s, gen, generator, logits_processors, stop_token_ids)


@torch.no_grad()
def generate_answers(model, input_ids: Sequence[torch.Tensor], pixel_values: torch.Tensor | None,
                     gen: GenerationConfig = GenerationConfig(), generator: torch.Generator | None = None) -> list[str]:
    """The answer text per row, read back by the model's connector (region references -> boxes) from what the
    prompt's embedding step recorded, so the encoder runs once per prompt."""
    s, _ = model.embed(list(input_ids), None, pixel_values, padding_side="left")
    return model.decode_answers(generate_from(model, s, gen, generator), s.info)


@torch.no_grad()
def generate_from(model, s, gen: GenerationConfig = GenerationConfig(), generator: torch.Generator | None = None,
                  logits_processors: Sequence[Callable] = (), stop_token_ids: Sequence[int] | None = None) -> list[list[int]]:
    """Generation from an embedded, left-padded prompt batch ``s`` (``model.embed(..., padding_side="left")``)."""
    embeds, mask, pos = s.inputs_embeds, s.attention_mask, s.position_ids      # [B, T, D], [B, T], [B, T]
    B = embeds.shape[0]
    stop_ids = sorted(stop_token_ids if stop_token_ids is not None else model.builder.stop_token_ids())
    device = embeds.device                                                     # where the model is
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    idle = stop_ids[0] if stop_ids else (model.tokenizer.pad_token_id or 0)     # what finished rows emit
    embed_tokens = model.llm.get_input_embeddings()
    cache = DynamicCache() if gen.use_cache else None
    step_embeds, step_pos = embeds, pos
    generated = torch.zeros(B, 0, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    for _ in range(gen.max_new_tokens):
        out = model.llm(inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_pos,
                        use_cache=gen.use_cache, **cache_kwargs(model.llm, cache))
        logits = out.logits[:, -1].float()                                       # [B, V]
        for proc in logits_processors:
            logits = proc(logits, generated)
        if gen.do_sample:
            probs = filter_logits(logits / max(gen.temperature, 1e-6), gen.top_k, gen.top_p).softmax(-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            token = logits.argmax(-1)
        token = token.masked_fill(finished, idle)
        generated = torch.cat([generated, token[:, None]], 1)
        finished |= torch.isin(token, stops)
        if bool(finished.all()):
            break
        new_embed = embed_tokens(token)[:, None]                                 # [B, 1, D]
        new_pos = pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(B, 1)], 1)
        pos = torch.cat([pos, new_pos], 1)
        if gen.use_cache:
            step_embeds, step_pos = new_embed, new_pos
        else:
            embeds = torch.cat([embeds, new_embed], 1)
            step_embeds, step_pos = embeds, pos
    result = []
    for row in generated.tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        result.append(row[:cut])
    return result
