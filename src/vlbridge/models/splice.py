"""Splice visual tokens into text embeddings, in place of each image placeholder.

Each sample is a 1-D list of token ids where every image is ONE ``image_token_id``; each image's visual
tokens ``[M_i, D]`` replace that id at that position (so images stay where the user put them, several
images per sample and text-only samples work, and M_i may differ per image). Visual and padding positions
get label -100. Padding is on the right for training and on the left for batched generation.

Position ids count real tokens (``image_positions="sequential"``, the LLaVA convention). With ``"shared"``
all of an image's tokens take the position of its first token and the text after it continues one
further: rotary embeddings then rotate every visual token of an image alike, so a question's attention to
them is by content alone (the order of the tokens stays visible to the causal mask).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..connectors.base import ImageSlot
from ..data.template import IGNORE_INDEX
from ..config import register_names

IMAGE_POSITIONS = ("sequential", "shared")
register_names("image_positions", lambda: IMAGE_POSITIONS)



@dataclass
class Spliced:
    inputs_embeds: torch.Tensor     # [B, T, D]
    attention_mask: torch.Tensor    # [B, T] 1 = real token
    position_ids: torch.Tensor      # [B, T] 0.. over real tokens (each image one position if "shared"); right
                                    # pads continue the count, left pads are 0
    labels: torch.Tensor | None     # [B, T] or None
    visual_mask: torch.Tensor       # [B, T] True where a visual token sits
    info: list | None = None        # per sample, what the connector's decode_answer reads (Connector.arrange)
    slots: list[ImageSlot] = field(default_factory=list)   # where each image sits, in visual-entry order
    connector_output: object = None  # the connector's output for the batch's images (set by the model)


def splice(embed_tokens, input_ids: list[torch.Tensor], labels: list[torch.Tensor] | None,
           visual: list[torch.Tensor], image_token_id: int, padding_side: str = "right",
           image_positions: str = "sequential") -> Spliced:
    """input_ids[b]: [L_b]; visual: one [M_i, D] per image, in sample order then position order."""
    if image_positions not in IMAGE_POSITIONS:
        raise ValueError(f"image_positions {image_positions!r}: choose from {IMAGE_POSITIONS}")
    lengths = [len(x) for x in input_ids]
    device = embed_tokens.weight.device                               # ids and labels index on the CPU; the
    input_ids = [x.cpu() for x in input_ids]                          # embeddings are made where the model is
    text = embed_tokens(torch.cat(input_ids).to(device)).split(lengths)          # each [L_b, D]
    rows, label_rows, vis_rows, step_rows = [], [], [], []
    slots: list[ImageSlot] = []
    next_image = 0
    for b, ids in enumerate(input_ids):
        where = (ids == image_token_id).nonzero().flatten().tolist()
        parts, lab, vis, step = [], [], [], []
        start = 0
        for pos in where + [len(ids)]:
            parts.append(text[b][start:pos])
            lab.append(labels[b][start:pos].cpu() if labels is not None else ids[start:pos])
            vis.append(torch.zeros(pos - start, dtype=torch.bool))
            step.append(torch.ones(pos - start, dtype=torch.long))
            if pos == len(ids):
                break
            if next_image >= len(visual):
                raise ValueError(f"sample {b} has more image placeholders than images")
            v = visual[next_image]
            next_image += 1
            # produced: the placeholder is supervised (a document's image, an image in an assistant turn)
            produced = labels is not None and int(labels[b][pos]) != IGNORE_INDEX
            slots.append(ImageSlot(b, sum(len(x) for x in parts), len(v), produced))
            parts.append(v.to(text[b].dtype))
            lab.append(torch.full((len(v),), IGNORE_INDEX, dtype=torch.long))
            vis.append(torch.ones(len(v), dtype=torch.bool))
            advance = torch.ones(len(v), dtype=torch.long)        # position step of each visual token
            if image_positions == "shared":
                advance[1:] = 0
            step.append(advance)
            start = pos + 1
        rows.append(torch.cat(parts))
        label_rows.append(torch.cat(lab))
        vis_rows.append(torch.cat(vis))
        step_rows.append(torch.cat(step))
    if next_image != len(visual):
        raise ValueError(f"{len(visual)} images for {next_image} image placeholders")

    B, T, D = len(rows), max(len(r) for r in rows), rows[0].shape[-1]
    embeds = rows[0].new_zeros(B, T, D)
    mask = torch.zeros(B, T, dtype=torch.long)
    out_labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    vis_mask = torch.zeros(B, T, dtype=torch.bool)
    steps = torch.zeros(B, T, dtype=torch.long)
    if padding_side == "left":
        for slot in slots:
            slot.start += T - len(rows[slot.row])
    for b, (r, l, v, st) in enumerate(zip(rows, label_rows, vis_rows, step_rows)):
        sl = slice(T - len(r), T) if padding_side == "left" else slice(0, len(r))
        embeds[b, sl], mask[b, sl], out_labels[b, sl], vis_mask[b, sl], steps[b, sl] = r, 1, l, v, st
        if padding_side == "right":
            # Right pads keep counting: ids that stepped by 0 there would read to transformers as the start of
            # new packed sequences when the forward drops the padding mask, and it would build a mask (full T x T
            # attention) instead of taking the causal kernel, which skips the upper triangle.
            steps[b, len(r):] = 1
    positions = (steps.cumsum(1) - 1).clamp(min=0)                   # [B, T]
    return Spliced(embeds, mask.to(device), positions.to(device),
                   out_labels.to(device) if labels is not None else None, vis_mask.to(device), slots=slots)
