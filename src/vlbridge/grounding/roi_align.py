"""RoIAlign in plain torch (no torchvision here), on CORNER boxes.

Each box ``(x1, y1, x2, y2)``, normalised to [0, 1] of the image, is divided into ``S x S`` bins; each bin
averages ``sampling_ratio x sampling_ratio`` bilinear samples taken at evenly spaced points inside it. The
map is addressed in continuous coordinates where pixel ``i`` covers ``[i, i + 1)`` (its centre is
``i + 0.5``), i.e. torchvision's ``aligned=True``; samples within half a pixel of the border take the border
value. Boxes are corners, never (cx, cy, w, h): Groma's released code passed centre-format boxes to its
RoIAlign by mistake (and the maintainer kept it), which this module does not reproduce.

With normalised corners the sampling grid of ``F.grid_sample`` (``align_corners=False``) is simply
``2 * position - 1``, so the same box works on maps of any resolution (several levels of one encoder).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def _sample_positions(lo: torch.Tensor, hi: torch.Tensor, bins: int, ratio: int) -> torch.Tensor:
    """[R] box edges -> [R, bins * ratio] normalised sample positions (bin by bin, evenly inside each bin)."""
    steps = (torch.arange(bins * ratio, dtype=lo.dtype) + 0.5) / (bins * ratio)   # [bins * ratio] in (0, 1)
    return lo[:, None] + (hi - lo)[:, None] * steps[None, :]


def roi_align(features: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: int | tuple[int, int],
              sampling_ratio: int = 2) -> torch.Tensor:
    """features [B, C, H, W]; boxes: one [R_b, 4] normalised corner tensor per image -> [sum R_b, C, S_h, S_w]."""
    if features.dim() != 4 or len(boxes) != features.shape[0]:
        raise ValueError(f"roi_align: features must be [B, C, H, W] with one box tensor per image; got "
                         f"{tuple(features.shape)} and {len(boxes)} box tensors")
    s_h, s_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    r = int(sampling_ratio)
    if r < 1:
        raise ValueError(f"roi_align: sampling_ratio must be >= 1, got {sampling_ratio}")
    out = []
    for fmap, b in zip(features, boxes):
        if len(b) == 0:
            continue
        b = b.to(fmap.dtype)
        xs = _sample_positions(b[:, 0], b[:, 2], s_w, r)                 # [R, S_w * r]
        ys = _sample_positions(b[:, 1], b[:, 3], s_h, r)                 # [R, S_h * r]
        grid = torch.stack([xs[:, None, :].expand(-1, ys.shape[1], -1),   # grid_sample wants (x, y) last
                            ys[:, :, None].expand(-1, -1, xs.shape[1])], -1) * 2 - 1   # [R, S_h r, S_w r, 2]
        samples = F.grid_sample(fmap[None].expand(len(b), -1, -1, -1), grid, mode="bilinear",
                                padding_mode="border", align_corners=False)           # [R, C, S_h r, S_w r]
        out.append(F.avg_pool2d(samples, r) if r > 1 else samples)                     # [R, C, S_h, S_w]
    if not out:
        return features.new_zeros(0, features.shape[1], s_h, s_w)
    return torch.cat(out)
