"""The token merger: folds the dropped patches into the kept ones, then gathers the kept tokens.

L pre-LN blocks over the full raster sequence h (starting at the features, plus a learned position
embedding when enabled):

- causal self-attention: query i attends key j iff j <= i and j is kept (the kept tokens see only earlier
  kept tokens, like text tokens in the LLM);
- cross-attention: queries attend only to the *dropped* patches, keys/values from LN(x) of the block input
  features (no causal constraint); when nothing is dropped this adds exactly zero; optionally with a learned
  bias per 2-D offset between query and key patch (``local_grid``), so merging neighbours is easy to learn;
- FFN.

Dropped positions' own outputs are never used (they are neither kept-token keys nor cross-attention
keys, which come from the fixed input features). A final LN, then the kept positions are gathered in raster
order into ``[B, M_max, D]`` with per-image lengths (right padding, zeros).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import KeyMaskedAttention
from .selector import Selection


@dataclass
class Merged:
    tokens: torch.Tensor        # [B, M_max, D] kept tokens in raster order, zero-padded
    lengths: torch.Tensor       # [B] kept tokens per image
    positions: torch.Tensor     # [B, M_max] raster index of each kept token (-1 on padding)
    full: torch.Tensor | None = None   # [B, N, D] every position's output (training: codes of dropped positions
                                       # let the decoder's straight-through weights reach every decision)

    @property
    def valid(self) -> torch.Tensor:
        return self.positions >= 0                                       # [B, M_max]


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class RelativeBias(nn.Module):
    """A learned per-head bias for each 2-D offset (dy, dx) between two raster positions of a grid."""

    def __init__(self, heads: int, grid: tuple[int, int]):
        super().__init__()
        rows, cols = grid
        self.table = nn.Parameter(torch.zeros(heads, (2 * rows - 1) * (2 * cols - 1)))
        r, c = torch.arange(rows * cols) // cols, torch.arange(rows * cols) % cols
        index = (r[:, None] - r[None, :] + rows - 1) * (2 * cols - 1) + (c[:, None] - c[None, :] + cols - 1)
        self.register_buffer("index", index, persistent=False)              # [N, N]

    def forward(self) -> torch.Tensor:
        return self.table[:, self.index][None]                             # [1, H, N, N]


class MergerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, grid: tuple[int, int] | None = None):
        super().__init__()
        self.cross_bias = RelativeBias(heads, grid) if grid else None
        self.norm_self, self.norm_cross, self.norm_kv, self.norm_ffn = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = KeyMaskedAttention(dim, heads)
        self.cross_attn = KeyMaskedAttention(dim, heads)
        self.ffn = FeedForward(dim, mlp_ratio * dim)

    def forward(self, h: torch.Tensor, x: torch.Tensor, sel: Selection) -> torch.Tensor:
        N = h.shape[1]
        causal = torch.ones(N, N, dtype=torch.bool, device=h.device).tril()   # [N, N] j <= i
        hn = self.norm_self(h)
        h = h + self.self_attn(hn, hn, causal, sel.keep, sel.weight)
        bias = self.cross_bias().expand(h.shape[0], -1, -1, -1) if self.cross_bias is not None else None
        h = h + self.cross_attn(self.norm_cross(h), self.norm_kv(x), None, ~sel.keep, 1 - sel.weight, bias)
        return h + self.ffn(self.norm_ffn(h))


class TokenMerger(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: int, n_positions: int | None = None,
                 local_grid: tuple[int, int] | None = None):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(n_positions, dim)) if n_positions else None
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(MergerBlock(dim, heads, mlp_ratio, local_grid) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, sel: Selection) -> Merged:
        if self.pos is not None:
            x = x + self.pos                                               # [B, N, D]
        h = x
        for block in self.blocks:
            h = block(h, x, sel)
        h = self.norm(h)
        merged = gather_kept(h, sel.keep)
        merged.full = h
        return merged


def gather_kept(h: torch.Tensor, keep: torch.Tensor) -> Merged:
    """Kept positions of h [B, N, D] in raster order -> [B, M_max, D] (zero padding) + lengths + positions."""
    B, N, D = h.shape
    lengths = keep.sum(1)                                                  # [B]
    M = max(int(lengths.max()), 1) if B else 1
    # stable order: kept positions first (in raster order), then the rest
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :M]   # [B, M]
    valid = torch.arange(M, device=h.device)[None, :] < lengths[:, None]   # [B, M]
    tokens = h.gather(1, order[..., None].expand(B, M, D)) * valid[..., None].to(h.dtype)
    return Merged(tokens, lengths, torch.where(valid, order, torch.full_like(order, -1)))
