"""The region list of one image: which boxes the prompt lists as ``<r0> feat, <r1> feat, …`` (Groma's selection).

Inference: the proposer's kept boxes (score threshold, NMS, top-K; best first), then the user's own boxes.
Training (as Groma): the ground-truth boxes of the answers join the candidates with a low score
(``gt_score``), NMS runs again over proposals + ground truth and the best ``max_regions`` stay; a ground
truth box that no kept box covers (IoU >= ``match_iou``) replaces the lowest-scoring kept box that covers no
ground truth, so every answer has a region to point at; the kept boxes are shuffled, so an index says
nothing about rank. An answer box points at the kept region with the highest IoU. User boxes are appended
after the proposals (the same box twice gets one index).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.boxes import Box
from .box_ops import box_iou, nms


@dataclass
class RegionList:
    boxes: torch.Tensor                                   # [R, 4] proposals first, then user boxes
    answer_index: list[int] = field(default_factory=list)  # per answer box: its region
    user_index: list[int] = field(default_factory=list)    # per user box: its region
    n_proposals: int = 0


def build_region_list(proposals: torch.Tensor, scores: torch.Tensor, answer_boxes: list[Box], user_boxes: list[Box],
                      max_regions: int, max_user_regions: int, training: bool = False, gt_score: float = 0.2,
                      nms_iou: float = 0.6, match_iou: float = 0.5,
                      generator: torch.Generator | None = None) -> RegionList:
    dtype = proposals.dtype
    gt = torch.tensor(answer_boxes, dtype=dtype).view(-1, 4)
    kept = proposals[:max_regions]
    if training and len(gt):
        unique_gt = torch.unique(gt, dim=0)
        cand = torch.cat([proposals, unique_gt])
        cand_scores = torch.cat([scores.to(dtype), torch.full((len(unique_gt),), gt_score, dtype=dtype)])
        order = nms(cand, cand_scores, nms_iou)[:max_regions]
        kept, kept_scores = cand[order], cand_scores[order]
        for g in unique_gt:
            iou = box_iou(g[None], kept)[0] if len(kept) else torch.zeros(0)
            if len(iou) and float(iou.max()) >= match_iou:
                continue
            if len(kept) < max_regions:
                kept, kept_scores = torch.cat([kept, g[None]]), torch.cat([kept_scores, kept_scores.new_tensor([gt_score])])
                continue
            covers = (box_iou(kept, unique_gt) >= match_iou).any(1)                   # [K]
            free = (~covers).nonzero().flatten()
            if len(free) == 0:
                continue                                                               # more answers than regions
            victim = free[kept_scores[free].argmin()]
            kept, kept_scores = kept.clone(), kept_scores.clone()
            kept[victim], kept_scores[victim] = g, gt_score
        kept = kept[torch.randperm(len(kept), generator=generator)]
    answer_index = [int(box_iou(g[None], kept)[0].argmax()) for g in gt] if len(kept) else []
    users: list[Box] = []
    for b in user_boxes:
        if tuple(b) not in users:
            users.append(tuple(b))
    if len(users) > max_user_regions:
        raise ValueError(f"{len(users)} user boxes in one sample; this model takes at most {max_user_regions}")
    user_index = [len(kept) + users.index(tuple(b)) for b in user_boxes]
    boxes = torch.cat([kept, torch.tensor(users, dtype=dtype).view(-1, 4)])
    return RegionList(boxes, answer_index, user_index, len(kept))
