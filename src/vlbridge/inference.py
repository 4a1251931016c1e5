"""Ask a trained model about images: PIL images + conversation turns -> answer strings (batched), and how
likely a given answer is (token log-probabilities of a continuation, batched)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from .data.records import Turn
from .data.template import IGNORE_INDEX
from .generate import GenerationConfig, generate_answers


@dataclass
class Query:
    turns: list[Turn]                 # ends with the user turn to answer
    images: list[Image.Image]         # RGB, one per <image> placeholder, in order


@dataclass
class Scored:
    """How likely a continuation is as the start of the model's answer."""
    token_logprobs: list[float]       # log p of each continuation token given everything before it
    greedy: bool                      # every continuation token is the model's most likely next token

    @property
    def logprob(self) -> float:
        """log p(continuation | query): the sum of the token log-probabilities."""
        return float(sum(self.token_logprobs))


class Predictor:
    def __init__(self, model, gen: GenerationConfig | None = None, seed: int = 0):
        self.model = model.eval()
        self.gen = gen or GenerationConfig()
        self.transform = model.vision.image_transform()
        self.generator = torch.Generator().manual_seed(seed)

    def encode(self, query: Query) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids, _ = self.model.builder.build(query.turns, for_generation=True)
        pixels = torch.stack([self.transform(im) for im in query.images]) if query.images else None
        return torch.tensor(ids), pixels

    def answer(self, queries: Sequence[Query]) -> list[str]:
        encoded = [self.encode(q) for q in queries]
        pixels = [p for _, p in encoded if p is not None]
        return generate_answers(self.model, [ids for ids, _ in encoded], torch.cat(pixels) if pixels else None,
                                self.gen, generator=self.generator)

    def continuation_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` as the start of the assistant's answer (leading whitespace dropped, as an
        answer is tokenized in training)."""
        return self.model.builder.encode_message(text.lstrip())

    @torch.no_grad()
    def score(self, queries: Sequence[Query], continuations: Sequence[str]) -> list[Scored]:
        """Token log-probabilities of each continuation as the start of the answer to its query (one batch).

        The continuation is scored alone: the assistant's end-of-turn tokens after it are not.
        """
        encoded = [self.encode(q) for q in queries]
        conts = [self.continuation_ids(c) for c in continuations]
        ids = [torch.cat([prompt, torch.tensor(c, dtype=prompt.dtype)]) for (prompt, _), c in zip(encoded, conts)]
        labels = [torch.tensor([IGNORE_INDEX] * len(prompt) + c) for (prompt, _), c in zip(encoded, conts)]
        pixels = [p for _, p in encoded if p is not None]
        s, _ = self.model.embed(ids, labels, torch.cat(pixels) if pixels else None)
        logits = self.model.llm(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask,
                                position_ids=s.position_ids, use_cache=False).logits.float()    # [B, T, V]
        logprobs = logits[:, :-1].log_softmax(-1)                                               # [B, T-1, V]
        targets = s.labels[:, 1:]                                                               # [B, T-1]
        token_lp = logprobs.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)            # [B, T-1]
        greedy = logprobs.argmax(-1) == targets
        scored = targets != IGNORE_INDEX
        return [Scored(token_lp[b][scored[b]].tolist(), bool(greedy[b][scored[b]].all())) for b in range(len(ids))]

    def ask(self, question: str, images: Sequence[Image.Image] = ()) -> str:
        """One question about zero or more images; adds '<image>\\n' per image when the text has none."""
        if images and "<image>" not in question:
            question = "<image>\n" * len(images) + question
        return self.answer([Query([Turn("user", question)], list(images))])[0]
