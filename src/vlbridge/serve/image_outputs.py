"""Images an answer writes, returned as data-URL image parts: one writer per image-generating connector.

A writer tells the engine which ids open an image (``end_ids``: the text row ends there) and which logits
processors keep text and image ids apart while the text is written; ``write`` then generates and paints
the images of the rows that opened one, batched. ``lavit``: the LLM writes code ids after [IMG] with
classifier-free guidance (``recipes/lavit/image_generation.py``). ``emu``: the LLM regresses the image's M
embeddings after [IMG] and the connector's visual decoder paints them (``recipes/emu/image_generation.py``).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import torch
from PIL import Image


@dataclass
class ImageJob:
    prompt: list[int]                    # prompt ids + generated ids, ending with the id that opened the image
    pixel_values: torch.Tensor | None
    temperature: float
    top_p: float
    seed: int | None
    cfg_scale: float


class ImageWriter:
    """Runs the jobs that share sampling settings (``batch_key``) as one batch (``write_batch``)."""
    cfg_scale: float                                     # the connector's default guidance scale

    def batch_key(self, job: ImageJob) -> tuple:
        raise NotImplementedError

    def write_batch(self, jobs: list[ImageJob], pixels: torch.Tensor | None) -> list[tuple[Image.Image, int]]:
        """(image, positions generated) per job; the jobs share one batch key."""
        raise NotImplementedError

    def write(self, jobs: list[ImageJob]) -> list[tuple[Image.Image, int]]:
        """(image, positions generated) per job, in the jobs' order."""
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(self.batch_key(job), []).append(i)
        out: dict[int, tuple[Image.Image, int]] = {}
        for idx in groups.values():
            pixels = [jobs[i].pixel_values for i in idx if jobs[i].pixel_values is not None]
            written = self.write_batch([jobs[i] for i in idx], torch.cat(pixels) if pixels else None)
            out.update(zip(idx, written))
        return [out[i] for i in range(len(jobs))]


class LavitWriter(ImageWriter):
    cfg_scale = 3.0                                      # default guidance (LaVIT uses it on the LLM side)

    def __init__(self, model):
        from ..lavit.vocabulary import ModalityMask, VisualVocab
        self.model = model
        self.vocab = VisualVocab.from_model(model)
        self.end_ids = [self.vocab.open_id]
        self.processors = [ModalityMask(self.vocab)]     # outside an image: no code ids, no [/IMG]

    def batch_key(self, job: ImageJob) -> tuple:
        return (job.temperature, job.top_p, job.seed, job.cfg_scale) if job.temperature > 0 else (0, job.cfg_scale)

    def write_batch(self, jobs: list[ImageJob], pixels: torch.Tensor | None) -> list[tuple[Image.Image, int]]:
        """(image, code tokens generated and [/IMG]) per job."""
        from ..recipes.lavit.image_generation import ImageGenConfig, generate_codes_after, render_codes
        job = jobs[0]
        gen = ImageGenConfig(cfg_scale=job.cfg_scale, do_sample=job.temperature > 0,
                             temperature=max(job.temperature, 1e-6), top_p=job.top_p,
                             seed=job.seed if job.seed is not None else 0)
        codes = generate_codes_after(self.model, [j.prompt for j in jobs], pixels, gen)
        return [(im, len(c) + 1) for c, im in zip(codes, render_codes(self.model, codes))]


class EmuWriter(ImageWriter):
    cfg_scale = 1.0                                      # default guidance: off

    def __init__(self, model):
        self.model = model
        self.end_ids = [model.tokenizer.convert_tokens_to_ids(model.connector.wrap_tokens[0])]   # [IMG]
        self.processors = []

    def batch_key(self, job: ImageJob) -> tuple:
        return (job.cfg_scale, job.seed or 0)            # regressed embeddings: temperature and top_p do not apply

    def write_batch(self, jobs: list[ImageJob], pixels: torch.Tensor | None) -> list[tuple[Image.Image, int]]:
        """(image, positions generated: M embeddings and [/IMG]) per job."""
        from ..recipes.emu.image_generation import EmuGenConfig, generate_embeddings_after, paint
        job = jobs[0]
        emb = generate_embeddings_after(self.model, [j.prompt for j in jobs], pixels,
                                        EmuGenConfig(cfg_scale=job.cfg_scale))
        return [(im, self.model.connector.num_tokens() + 1) for im in paint(self.model, emb, job.seed or 0)]


WRITERS = {"lavit": LavitWriter, "emu": EmuWriter}


def image_writer(model):
    """The writer of a model whose connector generates images; None for every other model."""
    cls = WRITERS.get(model.cfg.connector.name)
    return cls(model) if cls is not None else None


def data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
