"""The region encoder: ONE LLM-width token per box, from one or more feature maps (Groma's region encoder).

Per level: coordinate channels + 1x1 conv to ``dim``; RoIAlign ``S x S`` on CORNER boxes (``roi_align``);
a 3x3 conv. The levels are summed, ReLU, flattened and projected (Linear) to ``hidden``; a box-position MLP
(4 -> hidden -> hidden) of the normalised corners is added; a final GELU + Linear maps to the LLM width, and
a LayerNorm keeps every region token at a fixed scale (without it, trained through the LM loss alone, region
tokens can grow far beyond the word embeddings along one shared direction, where attention cannot tell them
apart; docs/notes/grounding.md).
Shapes: maps ``[B, C_l, H_l, W_l]`` per level, boxes ``[R_b, 4]`` per image -> ``[sum R_b, D_llm]``.
"""
from __future__ import annotations

import torch
from torch import nn

from .feature_maps import coordinate_channels
from .roi_align import roi_align


class RegionEncoder(nn.Module):
    def __init__(self, in_dims: list[int], llm_dim: int, dim: int = 64, hidden: int = 256, roi_size: int = 4,
                 sampling_ratio: int = 2):
        super().__init__()
        self.roi_size, self.sampling_ratio = roi_size, sampling_ratio
        self.proj = nn.ModuleList(nn.Conv2d(d + 2, dim, 1) for d in in_dims)
        self.conv = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in in_dims)
        self.flat = nn.Linear(dim * roi_size * roi_size, hidden)
        self.position = nn.Sequential(nn.Linear(4, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.out = nn.Sequential(nn.GELU(), nn.Linear(hidden, llm_dim), nn.LayerNorm(llm_dim))

    def forward(self, maps: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        pooled = 0
        for proj, conv, m in zip(self.proj, self.conv, maps):
            x = proj(coordinate_channels(m))                                            # [B, dim, H_l, W_l]
            pooled = pooled + conv(roi_align(x, boxes, self.roi_size, self.sampling_ratio))   # [R, dim, S, S]
        feats = self.flat(torch.relu(pooled).flatten(1))                                # [R, hidden]
        pos = self.position(torch.cat(list(boxes)).to(feats.dtype))                     # [R, hidden]
        return self.out(feats + pos)                                                    # [R, D_llm]
