"""Building blocks on spatial feature maps for the region proposer and the region encoder.

The maps come from any encoder layers (``VisualFeatures.layer_map``), e.g. an earlier, higher-resolution
stage of a conv encoder (the tiny ResNet: 16x16 after its first stage vs 8x8 at the end), as Groma reads
regions from a high-resolution map while the LLM gets a cheaper view.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_channels(fmap: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C + 2, H, W] with the x and y of each cell centre in [0, 1] appended."""
    B, _, H, W = fmap.shape
    ys = ((torch.arange(H, dtype=fmap.dtype) + 0.5) / H)[:, None].expand(H, W)
    xs = ((torch.arange(W, dtype=fmap.dtype) + 0.5) / W)[None, :].expand(H, W)
    return torch.cat([fmap, torch.stack([xs, ys])[None].expand(B, -1, -1, -1)], 1)


class FusedMap(nn.Module):
    """Several levels -> one map at the finest level's resolution: 1x1 conv per level (with coordinate
    channels), bilinear upsampling, sum. ``[B, C_l, H_l, W_l] * L -> [B, dim, H_max, W_max]``."""

    def __init__(self, in_dims: list[int], dim: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(d + 2, dim, 1) for d in in_dims)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        out = 0
        for proj, m in zip(self.proj, maps):
            x = proj(coordinate_channels(m))
            out = out + (x if x.shape[-2:] == size else F.interpolate(x, size=tuple(size), mode="bilinear",
                                                                      align_corners=False))
        return out
