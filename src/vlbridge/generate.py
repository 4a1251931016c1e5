"""Autoregressive generation for VLBridgeModel: KV cache or full recompute, greedy or sampling, batched.

Prompts are left-padded so every row's next token sits in the last column; positions count real tokens
only, so a left-padded row generates exactly what it would alone. ``logits_processors`` are callables
``(logits [B, V], generated [B, t]) -> logits`` (e.g. suppressing a vocabulary range).

``Decoding`` runs the LLM's forward passes of one batch: the prompt once (prefill), then one token per row
per step. Nothing in a step grows with the sequence: the KV cache is allocated once for prompt + budget and
filled in place (``cache="preallocated"``, attention reads the filled part; ``"static"`` is transformers'
StaticCache, fixed shapes, attention over the whole allocation, what the compiled step needs; ``"dynamic"`` is
transformers' DynamicCache, which copies the whole cache to grow it each step), the attention mask is one
buffer whose next column is switched on, only the new token is embedded, and only the last position's logits
are computed. Small steps run on one intra-op thread (``threads``): splitting a 128-wide matmul across cores
costs more in synchronisation than it saves, and far more when other processes hold the cores. ``compile``
compiles the decode step (``torch.compile``; the first call pays the compilation). ``use_cache=False``
recomputes the whole sequence each step: the reference the cached paths are tested against.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import Cache, DynamicLayer

CACHES = ("preallocated", "static", "dynamic")
SMALL_STEP_FLOPS = 64e6         # a decode step below this many FLOPs runs on one thread (threads=0)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    use_cache: bool = True          # False: recompute the whole sequence each step (the reference)
    cache: str = "preallocated"     # "preallocated": allocated once for prompt + max_new_tokens, filled in place;
                                    # "static": transformers' StaticCache; "dynamic": transformers' DynamicCache
                                    # (an LLM that cannot take the first two gets the dynamic one)
    compile: bool = False           # torch.compile the decode step (with the static cache; slow first call)
    threads: int = 0                # intra-op threads for the decode steps; 0 = one thread for small steps
                                    # (2 x batch x LLM parameters < SMALL_STEP_FLOPS), else torch's setting


def _base(llm):
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm        # through a peft wrapper


def cache_kwargs(llm, cache) -> dict:
    """The KV-cache keyword of this transformers version: ``cache`` (5.x; ``past_key_values`` is deprecated
    there) or ``past_key_values`` (4.x)."""
    name = "cache" if "cache" in inspect.signature(_base(llm).forward).parameters else "past_key_values"
    return {name: cache}


def last_logits_kwargs(llm) -> dict:
    """``logits_to_keep=1`` where the LLM takes it: the LM head runs on the last position only."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(_base(llm).forward).parameters else {}


def supports_static_cache(llm) -> bool:
    """Whether the LLM runs with transformers' StaticCache (its models declare it as ``_can_compile_fullgraph``)."""
    return bool(getattr(_base(llm), "_can_compile_fullgraph", False))


def full_attention_only(llm) -> bool:
    """Whether every layer attends to the whole sequence (no sliding window layers): the preallocated cache."""
    return set(getattr(llm.config, "layer_types", None) or ["full_attention"]) == {"full_attention"}


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in buffers [B, H, capacity, hd] allocated at the first update and written in
    place; the attention reads the filled part (a view, nothing copied)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, _ = key_states.shape
        self.device = key_states.device
        self.key_buffer = key_states.new_zeros(B, H, self.capacity, key_states.shape[-1])
        self.value_buffer = value_states.new_zeros(B, value_states.shape[1], self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KV cache: {end} positions for a cache of {self.capacity}")
        self.key_buffer[:, :, self.length:end] = key_states
        self.value_buffer[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        self.length -= abs(tokens_to_remove)
        self.keys, self.values = self.key_buffer[:, :, :self.length], self.value_buffer[:, :, :self.length]


def make_cache(kind: str, llm, length: int):
    """The KV cache of ``kind`` for ``length`` positions (the dynamic one where the LLM cannot take it)."""
    if kind == "preallocated" and full_attention_only(llm):
        return Cache(layers=[PreallocatedLayer(length) for _ in range(llm.config.num_hidden_layers)])
    if kind == "static" and supports_static_cache(llm):
        return StaticCache(config=llm.config, max_cache_len=length)
    return DynamicCache()


def decode_threads(gen: GenerationConfig, llm, batch: int) -> int | None:
    """Intra-op threads for the decode steps; None = leave torch's setting."""
    if gen.threads:
        return gen.threads
    flops = 2 * batch * sum(p.numel() for p in llm.parameters())        # ~ the matmuls of one step
    return 1 if flops < SMALL_STEP_FLOPS else None


@contextmanager
def intra_op_threads(n: int | None):
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _forward(llm, embeds, mask, pos, use_cache: bool, kwargs: dict) -> torch.Tensor:
    out = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=use_cache, **kwargs)
    return out.logits[:, -1]                                              # [B, V]


_compiled_forward = None


def compiled_forward():
    """``_forward`` compiled once per process (recompiled by torch for a new batch size or cache length)."""
    global _compiled_forward
    if _compiled_forward is None:
        _compiled_forward = torch.compile(_forward, dynamic=False)
    return _compiled_forward


class Decoding:
    """The LLM forward passes of one left-padded batch: ``prefill()``, then ``step(token)`` per new token;
    each returns the next-token logits [B, V]."""

    def __init__(self, llm, embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, budget: int,
                 gen: GenerationConfig):
        """embeds [B, T, D], mask [B, T] (1 = real token), pos [B, T]; budget = new tokens at most."""
        if gen.cache not in CACHES:
            raise ValueError(f"generation: cache must be one of {CACHES}, got {gen.cache!r}")
        B, T, D = embeds.shape
        self.llm, self.use_cache = llm, gen.use_cache
        kind = "static" if gen.compile else gen.cache
        length = T + budget
        if gen.compile:
            length = -(-length // 64) * 64               # fewer distinct shapes: fewer recompilations
        self.embed_tokens = llm.get_input_embeddings()
        self.mask = torch.zeros(B, length, dtype=torch.bool, device=embeds.device)   # [B, L] real tokens so far
        self.mask[:, :T] = mask.bool()
        self.t = T                                                          # sequence length so far
        self.next_pos = pos[:, -1:] + 1                                     # [B, 1]
        self.prompt = (embeds, pos)
        self.cache = make_cache(kind, llm, length) if gen.use_cache else None
        self.static = isinstance(self.cache, StaticCache)                  # its mask spans the whole allocation
        self.kwargs = {**cache_kwargs(llm, self.cache), **last_logits_kwargs(llm)}   # looked up once
        if not gen.use_cache:                            # the whole sequence, re-run each step
            self.embeds = embeds.new_zeros(B, length, D)
            self.embeds[:, :T] = embeds
            self.pos = pos.new_zeros(B, length)
            self.pos[:, :T] = pos
        self.step_forward = compiled_forward() if self.static and gen.compile else _forward

    def prefill(self) -> torch.Tensor:
        embeds, pos = self.prompt
        mask = self.mask if self.static else self.mask[:, :self.t]
        return _forward(self.llm, embeds, mask, pos, self.use_cache, self.kwargs)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """token [B]: each row's new token, appended; returns the logits after it."""
        new = self.embed_tokens(token)[:, None]                             # [B, 1, D]
        pos = self.next_pos
        self.next_pos = pos + 1
        self.mask[:, self.t] = True
        self.t += 1
        if self.cache is None:
            self.embeds[:, self.t - 1], self.pos[:, self.t - 1] = new[:, 0], pos[:, 0]
            return _forward(self.llm, self.embeds[:, :self.t], self.mask[:, :self.t], self.pos[:, :self.t], False,
                            self.kwargs)
        mask = self.mask if self.static else self.mask[:, :self.t]
        return self.step_forward(self.llm, new, mask, pos, True, self.kwargs)


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


def next_token(logits: torch.Tensor, gen, generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] -> [B]: greedy, or sampled with temperature / top-k / top-p (``gen`` has those fields)."""
    if not gen.do_sample:
        return logits.argmax(-1)
    probs = filter_logits(logits / max(gen.temperature, 1e-6), gen.top_k, gen.top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


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
    B = s.inputs_embeds.shape[0]
    stop_ids = sorted(stop_token_ids if stop_token_ids is not None else model.builder.stop_token_ids())
    device = s.inputs_embeds.device                                            # where the model is
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    idle = stop_ids[0] if stop_ids else (model.tokenizer.pad_token_id or 0)     # what finished rows emit
    decoding = Decoding(model.llm, s.inputs_embeds, s.attention_mask, s.position_ids, gen.max_new_tokens, gen)
    generated = torch.zeros(B, gen.max_new_tokens, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    n = 0
    logits = decoding.prefill()
    with intra_op_threads(decode_threads(gen, model.llm, B)):
        while n < gen.max_new_tokens:
            logits = logits.float()
            for proc in logits_processors:
                logits = proc(logits, generated[:, :n])
            token = next_token(logits, gen, generator).masked_fill(finished, idle)
            generated[:, n] = token
            n += 1
            finished |= torch.isin(token, stops)
            if n == gen.max_new_tokens or bool(finished.all()):
                break
            logits = decoding.step(token)
    result = []
    for row in generated[:, :n].tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        result.append(row[:cut])
    return result
