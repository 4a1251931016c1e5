"""Box operations on tensors: pairwise IoU, generalized IoU, non-maximum suppression, proposal selection.

Boxes are ``[N, 4]`` corner boxes ``(x1, y1, x2, y2)`` (normalised to [0, 1] in this package), the same
convention as the text format of ``data/boxes.py``. Written in plain torch (no torchvision here).
"""
from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """[N, 4] -> [N] (zero for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])               # [N, M, 2]
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])               # [N, M, 2]
    inter = (rb - lt).clamp(min=0).prod(-1)                          # [N, M]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter, union


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU: [N, 4] x [M, 4] -> [N, M]; 0 where the union is empty."""
    inter, union = _inter_union(a, b)
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU of matched boxes: [N, 4], [N, 4] -> [N] in (-1, 1]."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    iou = inter / union.clamp(min=1e-12)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-12)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds ``iou_threshold``.
    """
    order = scores.argsort(descending=True, stable=True)
    if len(order) == 0:
        return order
    overlap = box_iou(boxes[order], boxes[order]) > iou_threshold     # [N, N] in score order
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def select_proposals(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float, iou_threshold: float,
                     top_k: int, pre_nms: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's candidates -> kept boxes [K, 4] and scores [K], best first.

    The ``pre_nms`` best candidates scoring at least ``score_threshold`` go through NMS and at most ``top_k``
    survive; if none reaches the threshold the single best candidate is kept (as Groma does).
    """
    if len(scores) == 0:
        return boxes[:0], scores[:0]
    best = scores.topk(min(pre_nms, len(scores))).indices
    best = best[scores[best] >= score_threshold]
    if len(best) == 0:
        best = scores.argmax().view(1)
    keep = best[nms(boxes[best], scores[best], iou_threshold)][:top_k]
    return boxes[keep], scores[keep]
