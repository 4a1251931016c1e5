"""Images from an Emu model, in context: regress M embeddings one by one after [IMG], then paint them.

The prompt is a document (``data.records``): text with an ``<image>`` per given image, e.g. a caption
("a red circle above a small blue square"), or a story's frames and captions; images given without
placeholders go first, one item each. A newline (the documents' item separator) and ``[IMG]`` follow. Each step
the LLM's last hidden state passes the regression head, and the predicted embedding is the next input;
after M steps the connector's decoder paints the M embeddings. Classifier-free guidance runs the empty prompt
beside each prompt and takes ``u + scale * (c - u)`` of the two regressed embeddings, which both rows then
read. Batched over prompts with left padding; ``use_cache=False`` recomputes the whole sequence each step
(the reference the KV-cache path is tested against).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image
from transformers import DynamicCache

from ...data.images import tensor_to_image as to_image
from ...data.records import Turn
from ...errors import UserError
from ...data.template import DOCUMENT, IMAGE_TOKEN
from ...generate import cache_kwargs
from ...models.sparse_logits import last_hidden

SEPARATOR = "\n"         # between a document's items (texts and images)


@dataclass
class EmuGenConfig:
    cfg_scale: float = 1.0          # classifier-free guidance scale (1 = off)
    use_cache: bool = True
    seed: int = 0                   # the decoder's noise (a flow decoder samples; the palette decoder does not)
    batch_size: int = 32


def check_emu(model) -> None:
    if model.cfg.connector.name != "emu":
        raise UserError(f"connector is {model.cfg.connector.name!r}; generating images in context needs an Emu model "
                         "(connector 'emu')")


def document_text(prompt: str, n_images: int) -> str:
    """The prompt as a document ending where the new image goes: images without a placeholder first, one item
    each; then the separator (unless the text is empty or ends with one)."""
    missing = n_images - prompt.count(IMAGE_TOKEN)
    if missing < 0:
        raise UserError(f"prompt {prompt!r} has {prompt.count(IMAGE_TOKEN)} {IMAGE_TOKEN} placeholders for {n_images} "
                         "image(s)")
    text = SEPARATOR.join([IMAGE_TOKEN] * missing + ([prompt] if prompt else []))
    return text + SEPARATOR if text and not text.endswith(SEPARATOR) else text


def prompt_ids(model, prompt: str, n_images: int = 0) -> list[int]:
    """Token ids of the document prompt, then [IMG]."""
    ids, _ = model.builder.build([Turn(DOCUMENT, document_text(prompt, n_images))], for_generation=True)
    return ids + [model.tokenizer.convert_tokens_to_ids(model.connector.wrap_tokens[0])]


def pixels_of(model, images: Sequence[Image.Image]) -> torch.Tensor | None:
    transform = model.vision.image_transform()
    return torch.stack([transform(im.convert("RGB")) for im in images]) if images else None


@torch.no_grad()
def generate_embeddings(model, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]] | None = None,
                        gen: EmuGenConfig = EmuGenConfig()) -> torch.Tensor:
    """The M regressed embeddings [B, M, D] of the image that follows each prompt (its images in ``images``)."""
    check_emu(model)
    images = list(images) if images is not None else [[] for _ in prompts]
    if len(images) != len(prompts):
        raise UserError(f"{len(prompts)} prompts but {len(images)} image lists")
    rows = [prompt_ids(model, p, len(ims)) for p, ims in zip(prompts, images)]
    flat = [im for ims in images for im in ims]
    return generate_embeddings_after(model, rows, pixels_of(model, flat), gen)


@torch.no_grad()
def generate_embeddings_after(model, rows: Sequence[Sequence[int]], pixel_values: torch.Tensor | None,
                              gen: EmuGenConfig = EmuGenConfig()) -> torch.Tensor:
    """The M regressed embeddings [B, M, D] of the image each prompt opens: ``rows`` are token ids ending with
    [IMG] (a document prompt, or a chat whose answer has just opened an image); ``pixel_values`` are their
    images, in placeholder order. Guidance pairs each row with the empty document."""
    check_emu(model)
    model.eval()
    open_id = model.tokenizer.convert_tokens_to_ids(model.connector.wrap_tokens[0])
    if any(not r or r[-1] != open_id for r in rows):
        raise ValueError("every prompt must end with the [IMG] token")
    B, guided = len(rows), gen.cfg_scale != 1.0
    rows = [list(r) for r in rows]
    if guided:
        rows += [prompt_ids(model, "")] * B                              # the empty prompt beside each
    s, _ = model.embed([torch.tensor(r) for r in rows], None, pixel_values, padding_side="left")
    embeds, mask, pos = s.inputs_embeds, s.attention_mask, s.position_ids         # [R, T, D], [R, T], [R, T]
    cache = DynamicCache() if gen.use_cache else None
    step_embeds, step_pos, out = embeds, pos, []
    for _ in range(model.connector.num_tokens()):
        hidden = last_hidden(model.llm, inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_pos,
                             use_cache=gen.use_cache, **cache_kwargs(model.llm, cache))[:, -1]    # [R, D]
        e = model.connector.regress(hidden)                                              # [R, D]
        if guided:
            e = e[B:] + gen.cfg_scale * (e[:B] - e[B:])                                  # [B, D]
            e = torch.cat([e, e])                                                        # both rows read it
        out.append(e[:B])
        new_pos = pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        pos = torch.cat([pos, new_pos], 1)
        if gen.use_cache:
            step_embeds, step_pos = e[:, None].to(embeds.dtype), new_pos
        else:
            embeds = torch.cat([embeds, e[:, None].to(embeds.dtype)], 1)
            step_embeds, step_pos = embeds, pos
    return torch.stack(out, 1)                                                           # [B, M, D]


@torch.no_grad()
def paint(model, embeddings: torch.Tensor, seed: int = 0) -> list[Image.Image]:
    """M embeddings per image [B, M, D] -> RGB images through the connector's visual decoder."""
    decoder = model.connector.decoder.eval()
    generator = torch.Generator(device=embeddings.device).manual_seed(seed)
    pixels = decoder(embeddings, generator=generator)                                  # [B, 3, S, S] in [0, 1]
    return [to_image(p) for p in pixels]


def generate_images(model, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]] | None = None,
                    gen: EmuGenConfig = EmuGenConfig(), size: int | None = None) -> list[Image.Image]:
    """One image per prompt (document text; ``images[i]`` are prompt i's images, in placeholder order), painted at
    the decoder's size or resized to ``size`` x ``size``."""
    images = list(images) if images is not None else [[] for _ in prompts]
    out: list[Image.Image] = []
    for i in range(0, len(prompts), gen.batch_size):
        emb = generate_embeddings(model, prompts[i:i + gen.batch_size], images[i:i + gen.batch_size], gen)
        out += paint(model, emb, gen.seed + i)
    if size:
        out = [im.resize((size, size), Image.NEAREST) for im in out]
    return out
