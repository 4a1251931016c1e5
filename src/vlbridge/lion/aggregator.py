"""LION's Vision Aggregator: BERT-style layers whose query stream is the last encoder layer's patch tokens, each
layer cross-attending to one intermediate encoder layer (the first to the deeper one, then shallower ones).

Every layer (post-LN, as BERT): self-attention among the query tokens -> ``LN(h + attn)``; cross-attention from
them to its key layer -> ``LN(h + attn)``; FFN -> ``LN(h + ffn)``. The output projections of both attentions
and of the FFN start at zero, so a fresh aggregator passes the (normalised) query stream through and learns
what to add from the other layers. Key layers may have their own widths (conv stages); each is projected by
its layer's attention (``kdim``/``vdim``).

Key maps on another grid than the queries (a conv net's earlier, larger stages) are resampled to the query
grid by area averaging (``key_grid="query"``) or attended at their own resolution (``"native"``). Optional
fixed 2-D sine-cosine codes of each cell's centre in image coordinates (``position_codes``) are added to the
queries and keys, so maps of different resolutions line up; ViT tokens carry positions already, conv maps
do not.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..connectors.qformer import PostLNFeedForward


def position_codes(rows: int, cols: int, dim: int) -> torch.Tensor:
    """[rows*cols, dim] sine-cosine codes of the cell centres ((i + 0.5) / rows, (j + 0.5) / cols); dims past
    the largest multiple of 4 are zero."""
    quarter = dim // 4
    codes = torch.zeros(rows * cols, dim)
    if quarter == 0:
        return codes
    freqs = math.pi * 2.0 ** torch.arange(quarter, dtype=torch.float32) / 2     # pi/2, pi, 2pi, ...
    y = ((torch.arange(rows, dtype=torch.float32) + 0.5) / rows).repeat_interleave(cols)       # [N]
    x = ((torch.arange(cols, dtype=torch.float32) + 0.5) / cols).repeat(rows)                  # [N]
    ay, ax = y[:, None] * freqs, x[:, None] * freqs                                            # [N, quarter]
    codes[:, : 4 * quarter] = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], 1)
    return codes


class AggregatorLayer(nn.Module):
    def __init__(self, width: int, key_width: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.self_norm = nn.LayerNorm(width, eps=eps)
        self.cross_attn = nn.MultiheadAttention(width, heads, kdim=key_width, vdim=key_width, batch_first=True)
        self.cross_norm = nn.LayerNorm(width, eps=eps)
        self.ffn = PostLNFeedForward(width, intermediate, 0.0, eps)
        with torch.no_grad():                      # residual branches start at zero (BERT output projections)
            for proj in (self.self_attn.out_proj, self.cross_attn.out_proj, self.ffn.down):
                proj.weight.zero_()
                proj.bias.zero_()

    def forward(self, h: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        # h [B, N, D] query stream; keys [B, N_k, D_k]
        h = self.self_norm(h + self.self_attn(h, h, h, need_weights=False)[0])
        h = self.cross_norm(h + self.cross_attn(h, keys, keys, need_weights=False)[0])
        return self.ffn(h)                                                   # [B, N, D]


class VisionAggregator(nn.Module):
    """Layer i cross-attends to ``keys[i]``; returns the query stream [B, N, D] after all layers."""

    def __init__(self, width: int, key_widths: list[int], heads: int, intermediate: int, key_grid: str = "query",
                 use_position_codes: bool = False, eps: float = 1e-12):
        super().__init__()
        if key_grid not in ("query", "native"):
            raise ValueError(f"aggregator key_grid must be 'query' or 'native', got {key_grid!r}")
        if width % heads:
            raise ValueError(f"aggregator: the query width {width} is not divisible by {heads} heads")
        self.key_grid, self.use_position_codes = key_grid, use_position_codes
        self.layers = nn.ModuleList(AggregatorLayer(width, kw, heads, intermediate, eps) for kw in key_widths)

    def key_tokens(self, key_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """A key layer as tokens [B, H*W, C] from its map [B, C, H, W], resampled to ``grid`` if asked."""
        if self.key_grid == "query" and tuple(key_map.shape[-2:]) != tuple(grid):
            key_map = F.interpolate(key_map, size=grid, mode="area")
        tokens = key_map.flatten(2).transpose(1, 2)                           # [B, H*W, C]
        if self.use_position_codes:
            tokens = tokens + position_codes(*key_map.shape[-2:], tokens.shape[-1]).to(tokens)
        return tokens

    def forward(self, queries: torch.Tensor, key_maps: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        # queries [B, P + rows*cols, D] (P prefix tokens, e.g. a kept CLS); key_maps: one [B, C_i, H_i, W_i] per layer
        if len(key_maps) != len(self.layers):
            raise ValueError(f"aggregator has {len(self.layers)} layers but got {len(key_maps)} key maps")
        h = queries
        if self.use_position_codes:
            codes = position_codes(grid[0], grid[1], h.shape[-1]).to(h)                 # [N, D]
            h = torch.cat([h[:, : h.shape[1] - len(codes)], h[:, h.shape[1] - len(codes):] + codes], 1)
        for layer, key_map in zip(self.layers, key_maps):
            h = layer(h, self.key_tokens(key_map, grid))
        return h
