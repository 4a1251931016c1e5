"""The region proposer: a class-agnostic, dense, anchor-free box head (FCOS-like) on the encoder's maps.

Why dense rather than Groma's Deformable-DETR set predictor: on a CPU budget a DETR needs many epochs of
Hungarian-matched training before its queries specialise, while a dense head gets a target at every cell from
the first step (every cell whose centre lies inside an object), trains quickly on a frozen encoder and needs
no matching. Duplicates are removed afterwards with NMS.

Per cell of the fused map ``[B, dim, H, W]`` (``FusedMap`` of ``layers``): one objectness logit and four
distances ``(l, t, r, b)`` from the cell centre to the box sides (``softplus`` of the raw output, in cells),
so each cell predicts a corner box ``(cx - l, cy - t, cx + r, cy + b)``.

Targets (``assign_targets``): a cell is positive for the smallest ground-truth box that contains its centre
(the cell holding a box centre is always positive for that box); its objectness target is FCOS'
centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``, so the most central cell scores best.
Losses (Groma's weights): quality focal loss on objectness x2, and on positives L1 x5 + GIoU x2, weighted
by centerness. At inference the score is ``sigmoid(logit)``; then score threshold, NMS and top-K
(``box_ops.select_proposals``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .box_ops import box_area, box_iou, generalized_iou, select_proposals
from .feature_maps import FusedMap

PRIOR = 0.01                                  # initial objectness probability (focal-loss prior)
WEIGHT_SCORE, WEIGHT_L1, WEIGHT_GIOU = 2.0, 5.0, 2.0


@dataclass
class DenseOutput:
    logits: torch.Tensor      # [B, H*W] objectness logits, raster order
    boxes: torch.Tensor       # [B, H*W, 4] predicted corner boxes (normalised, not clamped)
    centres: torch.Tensor     # [H*W, 2] cell centres (x, y), normalised
    grid: tuple[int, int]     # (H, W)


class DenseProposer(nn.Module):
    def __init__(self, in_dims: list[int], dim: int = 64, convs: int = 2):
        super().__init__()
        self.fuse = FusedMap(in_dims, dim)
        layers: list[nn.Module] = []
        for _ in range(convs):
            layers += [nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(min(8, dim), dim), nn.ReLU()]
        self.tower = nn.Sequential(*layers)
        self.score = nn.Conv2d(dim, 1, 3, padding=1)
        self.ltrb = nn.Conv2d(dim, 4, 3, padding=1)
        nn.init.constant_(self.score.bias, -float(torch.log(torch.tensor((1 - PRIOR) / PRIOR))))

    def forward(self, maps: list[torch.Tensor]) -> DenseOutput:
        x = self.tower(self.fuse(maps))                                       # [B, dim, H, W]
        B, _, H, W = x.shape
        logits = self.score(x).flatten(1)                                     # [B, H*W]
        cell = x.new_tensor([1 / W, 1 / H, 1 / W, 1 / H])
        dist = F.softplus(self.ltrb(x)).flatten(2).transpose(1, 2) * cell     # [B, H*W, 4] (l, t, r, b)
        centres = cell_centres(H, W, x.dtype)                                 # [H*W, 2]
        c = centres.repeat(1, 2)[None]                                        # [1, H*W, 4] (cx, cy, cx, cy)
        boxes = c + dist * x.new_tensor([-1, -1, 1, 1])
        return DenseOutput(logits, boxes, centres, (H, W))

    @torch.no_grad()
    def propose(self, out: DenseOutput, score_threshold: float, iou_threshold: float,
                top_k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image: kept boxes [K, 4] (clamped to the image) and scores [K], best first."""
        scores = out.logits.sigmoid()
        return [select_proposals(b.clamp(0, 1), s, score_threshold, iou_threshold, top_k)
                for b, s in zip(out.boxes, scores)]


def cell_centres(H: int, W: int, dtype=torch.float32) -> torch.Tensor:
    """[H*W, 2] (x, y) centres of a grid's cells in raster order, normalised to [0, 1]."""
    ys, xs = torch.meshgrid((torch.arange(H, dtype=dtype) + 0.5) / H, (torch.arange(W, dtype=dtype) + 0.5) / W,
                            indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], -1)


def assign_targets(centres: torch.Tensor, grid: tuple[int, int], gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """centres [HW, 2], gt [n, 4] -> (matched gt index per cell [HW] (-1 = background), centerness [HW])."""
    HW = len(centres)
    if len(gt) == 0:
        return torch.full((HW,), -1, dtype=torch.long), torch.zeros(HW)
    H, W = grid
    cx, cy = centres[:, :1], centres[:, 1:]                                   # [HW, 1]
    inside = (cx > gt[:, 0]) & (cx < gt[:, 2]) & (cy > gt[:, 1]) & (cy < gt[:, 3])   # [HW, n]
    gcx, gcy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    centre_cell = (gcy * H).long().clamp(0, H - 1) * W + (gcx * W).long().clamp(0, W - 1)
    inside[centre_cell, torch.arange(len(gt))] = True                         # tiny boxes still get a cell
    area = torch.where(inside, box_area(gt)[None, :], torch.full_like(inside, float("inf"), dtype=gt.dtype))
    best_area, match = area.min(1)
    match = torch.where(torch.isfinite(best_area), match, torch.full_like(match, -1))
    g = gt[match.clamp(min=0)]                                                # [HW, 4]
    l, t = (cx[:, 0] - g[:, 0]).clamp(min=0), (cy[:, 0] - g[:, 1]).clamp(min=0)
    r, b = (g[:, 2] - cx[:, 0]).clamp(min=0), (g[:, 3] - cy[:, 0]).clamp(min=0)
    centerness = ((torch.minimum(l, r) / torch.maximum(l, r).clamp(min=1e-9))
                  * (torch.minimum(t, b) / torch.maximum(t, b).clamp(min=1e-9))).sqrt()
    centerness = torch.where(match >= 0, centerness.clamp(min=0.05), torch.zeros_like(centerness))
    return match, centerness


def proposer_loss(out: DenseOutput, gt_boxes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weighted losses (sum = total): quality focal loss on objectness, L1 and GIoU on positive cells."""
    targets = [assign_targets(out.centres, out.grid, g.to(out.boxes.dtype)) for g in gt_boxes]
    match = torch.stack([m for m, _ in targets])                              # [B, HW]
    quality = torch.stack([q for _, q in targets])                            # [B, HW]
    pos = match >= 0
    n_pos = max(int(pos.sum()), 1)
    p = out.logits.sigmoid()
    qfl = F.binary_cross_entropy_with_logits(out.logits, quality, reduction="none") * (p - quality).abs().pow(2)
    losses = {"score": WEIGHT_SCORE * qfl.sum() / n_pos}
    if pos.any():
        gt = torch.cat([g[m[ok]] for g, m, ok in zip(gt_boxes, match, pos)]).to(out.boxes.dtype)   # [P, 4]
        pred = out.boxes[pos]                                                 # [P, 4]
        w = quality[pos] / quality[pos].sum()
        losses["l1"] = WEIGHT_L1 * ((pred - gt).abs().sum(-1) * w).sum()
        losses["giou"] = WEIGHT_GIOU * ((1 - generalized_iou(pred, gt)) * w).sum()
    else:
        zero = out.boxes.sum() * 0
        losses["l1"], losses["giou"] = zero, zero
    return losses


def recall_at_k(proposals: list[torch.Tensor], gt_boxes: list[torch.Tensor], ks: list[int],
                iou_threshold: float = 0.5) -> dict[str, float]:
    """Fraction of ground-truth boxes matched (IoU >= threshold) by one of the first k proposals, per k;
    plus the mean best IoU over all kept proposals and the mean number kept."""
    hits = {k: 0 for k in ks}
    best_ious, n_gt, n_kept = [], 0, 0
    for props, gt in zip(proposals, gt_boxes):
        n_gt += len(gt)
        n_kept += len(props)
        if len(gt) == 0:
            continue
        if len(props) == 0:
            best_ious += [0.0] * len(gt)
            continue
        iou = box_iou(gt, props)                                              # [n_gt, K]
        for k in ks:
            hits[k] += int((iou[:, :k].max(1).values >= iou_threshold).sum())
        best_ious += iou.max(1).values.tolist()
    out = {f"recall@{k}": hits[k] / max(n_gt, 1) for k in ks}
    out["mean_best_iou"] = sum(best_ious) / max(len(best_ious), 1)
    out["mean_kept"] = n_kept / max(len(proposals), 1)
    return out
