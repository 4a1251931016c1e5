"""Text -> image with a LaVIT model: the LLM writes code ids after [IMG], the tokenizer's decoders paint them.

The prompt is the chat turn "Draw <caption>" followed by the assistant prefix and [IMG]. Each step the
``ModalityMask`` allows only code ids and [/IMG] (at least ``min_tokens`` codes, at most ``max_tokens``),
so text ids are suppressed inside the image; the row ends at [/IMG]. Classifier-free guidance (LaVIT
uses it on the LLM side, scale ~4): the same step also runs the unconditional prompt ("Draw"), and the
logits become ``uncond + scale * (cond - uncond)``; both rows then take the chosen token. Batched over
prompts with left padding and a KV cache (as ``vlbridge.generate``); with ``cfg_scale == 1`` and greedy
decoding the result equals ``generate`` with the same logits processor (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache

from ...data.records import Turn
from ...generate import cache_kwargs, filter_logits
from ...lavit.vocabulary import ModalityMask, VisualVocab, generation_prompt


@dataclass
class ImageGenConfig:
    cfg_scale: float = 1.0          # classifier-free guidance scale (1 = off)
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_tokens: int = 1
    max_tokens: int | None = None   # None = the number of patches (every patch kept)
    seed: int = 0


def image_prompt_ids(model, vocab: VisualVocab, caption: str) -> list[int]:
    ids, _ = model.builder.build([Turn("user", generation_prompt(caption))], for_generation=True)
    return ids + [vocab.open_id]


@torch.no_grad()
def generate_codes(model, captions: list[str], gen: ImageGenConfig = ImageGenConfig()) -> list[list[int]]:
    """Code indices (0..codebook_size-1) of one generated image per caption."""
    vocab = VisualVocab.from_model(model)
    return generate_codes_after(model, [image_prompt_ids(model, vocab, c) for c in captions], None, gen)


@torch.no_grad()
def generate_codes_after(model, prompts: list[list[int]], pixel_values: torch.Tensor | None,
                         gen: ImageGenConfig = ImageGenConfig()) -> list[list[int]]:
    """Code indices of the image each prompt opens: ``prompts`` are token ids ending with [IMG] (e.g. a chat
    whose answer has just opened an image; ``pixel_values`` are its input images, if any). The guidance
    prompt is the caption-less "Draw"."""
    model.eval()
    vocab = VisualVocab.from_model(model)
    if any(not r or r[-1] != vocab.open_id for r in prompts):
        raise ValueError("every prompt must end with the [IMG] token")
    tok = model.connector.visual_tokenizer
    max_tokens = gen.max_tokens or tok.n_patches
    mask = ModalityMask(vocab, start_in_image=True, min_image_tokens=gen.min_tokens, max_image_tokens=max_tokens)
    B = len(prompts)
    guided = gen.cfg_scale != 1.0
    rows = [list(r) for r in prompts]
    if guided:
        rows += [image_prompt_ids(model, vocab, "")] * B
    s, _ = model.embed([torch.tensor(r) for r in rows], None, pixel_values, padding_side="left")
    embeds, attn, pos = s.inputs_embeds, s.attention_mask, s.position_ids            # [R, T, D], [R, T], [R, T]
    R = embeds.shape[0]
    cache = DynamicCache()
    embed_tokens = model.llm.get_input_embeddings()
    generator = torch.Generator().manual_seed(gen.seed)
    generated = torch.zeros(B, 0, dtype=torch.long)
    finished = torch.zeros(B, dtype=torch.bool)
    step_embeds, step_pos = embeds, pos
    for _ in range(max_tokens + 1):
        logits = model.llm(inputs_embeds=step_embeds, attention_mask=attn, position_ids=step_pos,
                           use_cache=True, **cache_kwargs(model.llm, cache)).logits[:, -1].float()          # [R, V]
        if guided:
            cond, uncond = logits[:B], logits[B:]
            logits = uncond + gen.cfg_scale * (cond - uncond)                                   # [B, V]
        logits = mask(logits, generated)
        if gen.do_sample:
            probs = filter_logits(logits / max(gen.temperature, 1e-6), gen.top_k, gen.top_p).softmax(-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            token = logits.argmax(-1)
        token = token.masked_fill(finished, vocab.close_id)
        generated = torch.cat([generated, token[:, None]], 1)
        finished |= token == vocab.close_id
        if bool(finished.all()):
            break
        both = torch.cat([token, token]) if guided else token                                   # [R]
        step_embeds = embed_tokens(both)[:, None]
        step_pos = pos[:, -1:] + 1
        pos = torch.cat([pos, step_pos], 1)
        attn = torch.cat([attn, torch.ones(R, 1, dtype=attn.dtype)], 1)
    out = []
    for row in generated.tolist():
        cut = row.index(vocab.close_id) if vocab.close_id in row else len(row)
        out.append(vocab.to_codes(row[:cut]))
    return out


@torch.no_grad()
def render_codes(model, codes: list[list[int]]) -> list[Image.Image]:
    """Code sequences -> features (feature decoder) -> RGB images (pixel decoder)."""
    tok = model.connector.visual_tokenizer.eval()
    pixels = tok.render(tok.decode_ids(codes))                             # [B, 3, S, S] in [0, 1]
    return [to_image(p) for p in pixels]


def to_image(pixels: torch.Tensor) -> Image.Image:
    """[3, S, S] in [0, 1] -> RGB PIL image."""
    arr = (pixels.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def generate_images(model, captions: list[str], gen: ImageGenConfig = ImageGenConfig(),
                    batch_size: int = 32) -> tuple[list[Image.Image], list[list[int]]]:
    images, codes = [], []
    for i in range(0, len(captions), batch_size):
        c = generate_codes(model, captions[i:i + batch_size], gen)
        codes += c
        images += render_codes(model, c)
    return images, codes
