"""Ask a trained model about images: PIL images + conversation turns -> answer strings (batched)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from .data.records import Turn
from .generate import GenerationConfig, generate_answers


@dataclass
class Query:
    turns: list[Turn]                 # ends with the user turn to answer
    images: list[Image.Image]         # RGB, one per <image> placeholder, in order


class Predictor:
    """``task_type``: the routing type of every question (a mixture of adapters picks its adapters by it);
    None = the model's default."""

    def __init__(self, model, gen: GenerationConfig | None = None, seed: int = 0, task_type: str | None = None):
        self.model = model.eval()
        self.task_type = task_type
        self.gen = gen or GenerationConfig()
        self.transform = model.vision.image_transform()
        self.generator = torch.Generator().manual_seed(seed)

    def encode(self, query: Query) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids, _ = self.model.builder.build(query.turns, for_generation=True)
        pixels = torch.stack([self.transform(im) for im in query.images]) if query.images else None
        return torch.tensor(ids), pixels

    def answer(self, queries: Sequence[Query], types: Sequence[str] | None = None) -> list[str]:
        """Answers to ``queries``; ``types`` routes each by its own task type (default: ``task_type``)."""
        encoded = [self.encode(q) for q in queries]
        pixels = [p for _, p in encoded if p is not None]
        if types is None and self.task_type is not None:
            types = [self.task_type] * len(queries)
        with self.model.routing(types=types):
            return generate_answers(self.model, [ids for ids, _ in encoded], torch.cat(pixels) if pixels else None,
                                    self.gen, generator=self.generator)

    def ask(self, question: str, images: Sequence[Image.Image] = ()) -> str:
        """One question about zero or more images; adds '<image>\\n' per image when the text has none."""
        if images and "<image>" not in question:
            question = "<image>\n" * len(images) + question
        return self.answer([Query([Turn("user", question)], list(images))])[0]
