"""How a region-token (``groma``) connector arranges a batch's sequences around its images.

Given the proposals of each image (``GromaConnector.propose``), for every sample:

1. its region list is built from the proposals plus its user boxes (and, in training, its answer boxes) —
   ``region_list``;
2. box spans in the text become ``<roi><rj></roi>`` (+ a feature slot after user boxes) — ``region_tokens``;
3. the region encoder gives one token per listed box, and the image placeholder expands to
   ``[image tokens] <r0> f0 <r1> f1 …``, each feature slot to its region's token.

The region list of each sample is returned as ``Arranged.info``, so the answer's ``<roi><rj></roi>`` is read
back as region j's box (``boxes_to_text``) from the same list, without encoding the image again.
One image per sample (the region indices are per image).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..data.boxes import Box
from .region_list import RegionList, build_region_list
from .region_tokens import RegionTokenIds, find_spans, rewrite

if TYPE_CHECKING:                                  # the connector package imports this module
    from ..connectors.base import SequenceContext


@dataclass
class SamplePlan:
    ids: list[int]                     # rewritten ids (box spans -> region references)
    labels: list[int] | None
    image: int | None                  # index of the sample's image, None for a text-only sample
    regions: RegionList | None
    features: list[tuple[int, int]] = field(default_factory=list)   # (position, region) of feature slots


def plan_samples(ctx: SequenceContext, options, token_ids: RegionTokenIds, input_ids, labels,
                 proposals: list[tuple[torch.Tensor, torch.Tensor]]) -> list[SamplePlan]:
    """Each sample's region list and rewritten ids/labels; ``proposals`` per image (boxes [K, 4], scores [K])."""
    plans, next_image = [], 0
    for b, row in enumerate(input_ids):
        ids = row.tolist()
        lab = labels[b].tolist() if labels is not None else None
        n_images = ids.count(ctx.image_token_id)
        if n_images > 1:
            raise ValueError(f"sample {b} has {n_images} images; region tokens (groma) take one image per sample")
        if n_images == 0:
            plans.append(SamplePlan(ids, lab, None, None))
            continue
        spans = find_spans(ids, lab, token_ids, ctx.tokenizer.decode)
        answers: list[Box] = [s.box for s in spans if s.box is not None and s.answer]
        users: list[Box] = [s.box for s in spans if s.box is not None and not s.answer]
        boxes, scores = proposals[next_image]
        regions = build_region_list(boxes, scores, answers, users, options.max_regions, options.max_user_regions,
                                    training=ctx.training, gt_score=options.gt_score, nms_iou=options.nms_iou)
        it_answer, it_user = iter(regions.answer_index), iter(regions.user_index)
        assigned = [None if s.box is None else next(it_answer) if s.answer else next(it_user) for s in spans]
        feature_token = ctx.image_token_id if options.user_feature else None
        new_ids, new_labels, features = rewrite(ids, lab, spans, assigned, token_ids, feature_token)
        plans.append(SamplePlan(new_ids, new_labels, next_image, regions, features))
        next_image += 1
    return plans


def arrange_regions(ctx: SequenceContext, plans: list[SamplePlan], token_ids: RegionTokenIds,
                    visual: list[torch.Tensor], region_feats: torch.Tensor, tag_features: bool):
    """The batch's ids, labels, visual entries and region lists (the fields of ``Arranged``): each image's tokens
    followed by its region list, and each feature slot's region token. ``region_feats`` [sum R, D] are the
    listed regions' tokens, image by image."""
    with_image = [p for p in plans if p.image is not None]
    per_image = region_feats.split([len(p.regions.boxes) for p in with_image])
    entries_all = []
    for plan, feats_b in zip(with_image, per_image):
        index_embeds = ctx.embed(torch.tensor(token_ids.regions[:len(feats_b)], dtype=torch.long))   # [R, D]
        if tag_features:
            feats_b = feats_b + index_embeds
        listing = torch.stack([index_embeds, feats_b.to(index_embeds.dtype)], 1).flatten(0, 1)      # [2R, D]
        slots = {pos for pos, _ in plan.features}
        image_pos = next(i for i, t in enumerate(plan.ids) if t == ctx.image_token_id and i not in slots)
        entries = [(image_pos, torch.cat([visual[plan.image], listing]))]
        entries += [(pos, feats_b[j][None]) for pos, j in plan.features]
        entries_all += [t for _, t in sorted(entries, key=lambda e: e[0])]
    ids = [torch.tensor(p.ids, dtype=torch.long) for p in plans]
    labs = [torch.tensor(p.labels, dtype=torch.long) for p in plans] if plans and plans[0].labels is not None else None
    info = [p.regions.boxes if p.regions is not None else None for p in plans]
    return ids, labs, entries_all, info
