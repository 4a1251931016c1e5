"""Text -> image with a LaVIT model: the LLM writes code ids after [IMG], the tokenizer's decoders paint them.

The prompt is the chat turn "Draw <caption>" followed by the assistant prefix and [IMG]. Each step the
``ModalityMask`` allows only code ids and [/IMG] (at least ``min_tokens`` codes, at most ``max_tokens``),
so text ids are suppressed inside the image; the row ends at [/IMG]. Classifier-free guidance (LaVIT
uses it on the LLM side, scale ~4): the same step also runs the unconditional prompt ("Draw"), and the
logits become ``uncond + scale * (cond - uncond)``; both rows then take the chosen token. Batched over
prompts with left padding and decoded as ``vlbridge.generate`` decodes (``Decoding``); with ``cfg_scale == 1``
and greedy decoding the result equals ``generate`` with the same logits processor (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from ...data.images import tensor_to_image as to_image
from ...data.records import Turn
from ...generate import Decoding, GenerationConfig, decode_threads, intra_op_threads, next_token
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
    steps = max_tokens + 1
    decoding = Decoding(model.llm, s.inputs_embeds, s.attention_mask, s.position_ids, steps, GenerationConfig())
    generator = torch.Generator(device=model.device).manual_seed(gen.seed)
    generated = torch.zeros(B, steps, dtype=torch.long, device=model.device)
    finished = torch.zeros(B, dtype=torch.bool, device=model.device)
    n = 0
    logits = decoding.prefill()                                                         # [R, V]
    with intra_op_threads(decode_threads(GenerationConfig(), model.llm, len(rows))):
        while n < steps:
            logits = logits.float()
            if guided:
                cond, uncond = logits[:B], logits[B:]
                logits = uncond + gen.cfg_scale * (cond - uncond)                       # [B, V]
            token = next_token(mask(logits, generated[:, :n]), gen, generator).masked_fill(finished, vocab.close_id)
            generated[:, n] = token
            n += 1
            finished |= token == vocab.close_id
            if n == steps or bool(finished.all()):
                break
            logits = decoding.step(torch.cat([token, token]) if guided else token)     # both rows take it
    generated = generated[:, :n]
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


def generate_images(model, captions: list[str], gen: ImageGenConfig = ImageGenConfig(),
                    batch_size: int = 32) -> tuple[list[Image.Image], list[list[int]]]:
    images, codes = [], []
    for i in range(0, len(captions), batch_size):
        c = generate_codes(model, captions[i:i + batch_size], gen)
        codes += c
        images += render_codes(model, c)
    return images, codes
