"""The instruction text of each image, for connectors that read it (``wants_text``, e.g. InstructBLIP's Q-Former).

For every image placeholder of a sample (in order), the instruction is the text of the turn that holds it:
the tokens after the last role marker before the image, up to the first end-of-turn / assistant marker
after it (so the answer of a training sample is never included), without image placeholders. Blank
markers are not searched for (vicuna's user turn ends with " ": its instruction runs to "ASSISTANT: "). The tokens
are embedded with the LLM's input embeddings and padded into ``embeds [n_img, T, D_llm]`` with
``mask [n_img, T]`` (True = real token).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.template import ChatTemplate


@dataclass
class InstructionText:
    embeds: torch.Tensor       # [n_img, T, D_llm]
    mask: torch.Tensor         # [n_img, T] bool, True = real token


def _find(ids: list[int], pattern: list[int], start: int, stop: int) -> list[int]:
    """Start positions of `pattern` in ids[start:stop]."""
    n = len(pattern)
    return [i for i in range(start, stop - n + 1) if ids[i:i + n] == pattern]


def instruction_spans(input_ids: list[torch.Tensor], image_token_id: int, template: ChatTemplate,
                      encode) -> list[list[int]]:
    """Token ids of the instruction of each image, in sample order then position order."""
    def markers(*texts: str) -> list[list[int]]:       # blank markers (vicuna's " " suffix) would match anywhere
        return [encode(t) for t in texts if t.strip()]

    starts = markers(template.user_prefix, template.system_prefix, template.assistant_prefix)
    ends = markers(template.user_suffix, template.assistant_prefix, template.assistant_suffix)
    spans = []
    for row in input_ids:
        ids = row.tolist()
        for pos in (i for i, t in enumerate(ids) if t == image_token_id):
            begin = max((p + len(m) for m in starts for p in _find(ids, m, 0, pos)), default=0)
            end = min((p for m in ends for p in _find(ids, m, pos + 1, len(ids))), default=len(ids))
            spans.append([t for t in ids[begin:end] if t != image_token_id])
    return spans


def instruction_text(embed_tokens, spans: list[list[int]]) -> InstructionText:
    """Embed and right-pad the spans: embeds [n_img, T, D_llm], mask [n_img, T]."""
    T = max((len(s) for s in spans), default=0)
    ids = torch.zeros(len(spans), T, dtype=torch.long)
    mask = torch.zeros(len(spans), T, dtype=torch.bool)
    for i, s in enumerate(spans):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = True
    device = embed_tokens.weight.device
    return InstructionText(embed_tokens(ids.to(device)), mask.to(device))
