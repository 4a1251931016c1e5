"""The token merger: folds the dropped patches into the kept ones, computing on the kept tokens only.

L pre-LN blocks, each (in LaVIT's all-positions description; ``merger_reference`` runs exactly that):

- causal self-attention: query i attends key j iff j <= i and j is kept (the kept tokens see only earlier
  kept tokens, like text tokens in the LLM);
- cross-attention: queries attend only to the *dropped* patches, keys/values from LN(x) of the block input
  features (no causal constraint); when nothing is dropped this adds exactly zero; optionally with a learned
  bias per 2-D offset between query and key patch (``local_grid``), so merging neighbours is easy to learn;
- FFN.

A kept token's output never depends on a dropped position's own stream (dropped positions are not
self-attention keys, and the cross-attention reads the fixed input features), so the blocks run on the kept
tokens alone (``Subset``: packed rows for the Linears and FFN, padded per image for attention); the dropped
patches enter only through their cross-attention keys/values. A final LN; the kept tokens come out in
raster order as ``[B, M_max, D]`` with per-image lengths (right padding, zeros).

With straight-through selection weights (``Selection.weight`` carrying a gradient, tokenizer training with
``straight_through``), the gradient of a keep/drop decision reads the dropped positions' keys/values at every
block (DynamicViT's weighted softmax, see ``attention``). The dropped positions then run through the blocks
too, without gradient (the loss's gradient with respect to them is exactly zero: their weights are 0), and
``Merged.full`` holds every position's output; the backward pass covers the kept tokens only.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KeyMaskedAttention
from .selector import Selection
from .subset import Subset


@dataclass
class Merged:
    tokens: torch.Tensor        # [B, M_max, D] kept tokens in raster order, zero-padded
    lengths: torch.Tensor       # [B] kept tokens per image
    positions: torch.Tensor     # [B, M_max] raster index of each kept token (-1 on padding)
    full: torch.Tensor | None = None   # [B, N, D] every position's output, with straight-through weights only
                                       # (the dropped positions' codes let the decoder's weights reach every
                                       # decision); dropped rows carry no gradient

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

    def between(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The bias from raster positions queries [B, Lq] to keys [B, Lk] (-1 = padding, any value there)."""
        index = self.index[queries.clamp(min=0)[:, :, None], keys.clamp(min=0)[:, None, :]]   # [B, Lq, Lk]
        return self.table[:, index].transpose(0, 1)                        # [B, H, Lq, Lk]


@dataclass
class Layout:
    """What every block of one forward shares: the kept and dropped subsets, the features, the selection."""
    kept: Subset
    dropped: Subset
    x: torch.Tensor                     # [B, N, D] block input features (cross-attention keys/values)
    weight: torch.Tensor | None         # [B, N] straight-through selection weights; None = hard decisions only
    keep: torch.Tensor                  # [B, N] bool
    x_dropped: torch.Tensor | None      # [B, Ld, D] the dropped patches' features, padded (hard decisions)

    @property
    def straight_through(self) -> bool:
        return self.weight is not None

    @classmethod
    def of(cls, x: torch.Tensor, sel: Selection) -> "Layout":
        st = sel.weight if torch.is_grad_enabled() and sel.weight.requires_grad else None
        dropped = Subset(~sel.keep)
        x_dropped = dropped.pad(dropped.take(x)) if st is None else None
        return cls(Subset(sel.keep, min_width=1), dropped, x, st, sel.keep, x_dropped)

    @staticmethod
    def earlier(queries: Subset, keys: Subset) -> torch.Tensor:
        """[B, Lq, Lk] bool: key j is a real token at or before query i in raster order."""
        return (keys.positions[:, None, :] <= queries.positions[:, :, None]) & keys.valid[:, None, :]

    @cached_property
    def all_keys(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through self-attention of the kept queries over the kept, then the dropped key slots:
        allowed [B, L, L + Ld] (causal in raster order), key_on [B, L + Ld] (kept), weight [B, L + Ld]."""
        kept, dropped = self.kept, self.dropped
        allowed = torch.cat([self.earlier(kept, kept), self.earlier(kept, dropped)], 2)
        on = torch.cat([kept.valid, torch.zeros_like(dropped.valid)], 1)
        weight = torch.cat([kept.pad(kept.take(self.weight)), dropped.pad(dropped.take(self.weight))], 1)
        return allowed, on, weight


class MergerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, grid: tuple[int, int] | None = None):
        super().__init__()
        self.cross_bias = RelativeBias(heads, grid) if grid else None
        self.norm_self, self.norm_cross, self.norm_kv, self.norm_ffn = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = KeyMaskedAttention(dim, heads)
        self.cross_attn = KeyMaskedAttention(dim, heads)
        self.ffn = FeedForward(dim, round(mlp_ratio * dim))

    def forward(self, h: torch.Tensor, lay: Layout, hd: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h [T, D] the kept tokens (packed); hd [Td, D] the dropped positions' stream (straight-through
        weights only; computed without gradient). Returns both after the block."""
        h, hd = self._self_attention(h, lay, hd)
        h, hd = self._cross_attention(h, lay, hd)
        h = h + self.ffn(self.norm_ffn(h))
        if hd is not None:
            with torch.no_grad():
                hd = hd + self.ffn(self.norm_ffn(hd))
        return h, hd

    def _self_attention(self, h: torch.Tensor, lay: Layout, hd: torch.Tensor | None):
        kept, dropped, a = lay.kept, lay.dropped, self.self_attn
        hn = self.norm_self(h)
        q, k, v = (a.split_heads(kept.pad(proj(hn))) for proj in (a.q, a.k, a.v))        # [B, H, L, hd]
        if hd is None:
            # causal among the kept slots (raster order); a real query never reaches a padding slot
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)   # [B, L, D]
            return h + a.o(kept.pack(out)), None
        with torch.no_grad():                   # dropped positions: queries over the earlier kept tokens
            hdn = self.norm_self(hd)
            qd, kd, vd = (a.split_heads(dropped.pad(proj(hdn))) for proj in (a.q, a.k, a.v))   # [B, H, Ld, hd]
            out_d, has_d = a.attend(qd, k.detach(), v.detach(), lay.earlier(dropped, kept), kept.valid)
            hd = hd + a.o(dropped.pack(out_d)) * dropped.pack(has_d)[:, None].to(hd.dtype)
        # kept queries over kept and dropped keys, weighted: the decisions' straight-through gradient
        out, _ = a.attend(q, torch.cat([k, kd], 2), torch.cat([v, vd], 2), *lay.all_keys)
        return h + a.o(kept.pack(out)), hd

    def _cross_attention(self, h: torch.Tensor, lay: Layout, hd: torch.Tensor | None):
        kept, dropped, a = lay.kept, lay.dropped, self.cross_attn
        if dropped.width == 0:                  # nothing dropped in the batch: the cross-attention adds zero
            return h, hd
        if hd is None:                          # keys: the dropped patches only (padding rows masked)
            xn = self.norm_kv(lay.x_dropped)                                           # [B, Ld, D]
            k, v = (a.split_heads(proj(xn)) for proj in (a.k, a.v))                  # [B, H, Ld, hd]
            keys, on, w = dropped.positions, dropped.valid, None
        else:                                   # every patch, kept ones at weight 1 - w = 0 (for their gradient)
            xn = self.norm_kv(lay.x)                                                   # [B, N, D]
            k, v = (a.split_heads(proj(xn)) for proj in (a.k, a.v))                  # [B, H, N, hd]
            keys, on, w = torch.arange(lay.keep.shape[1], device=lay.keep.device).expand_as(lay.keep), ~lay.keep, 1 - lay.weight

        def merge(rows: torch.Tensor, sub: Subset, weight: torch.Tensor | None) -> torch.Tensor:
            q = a.split_heads(sub.pad(a.q(self.norm_cross(rows))))                   # [B, H, Lq, hd]
            bias = self.cross_bias.between(sub.positions, keys) if self.cross_bias is not None else None
            out, has_key = a.attend(q, k, v, None, on, weight, bias)
            return a.o(sub.pack(out)) * sub.pack(has_key)[:, None].to(rows.dtype)   # [Tq, D]

        h = h + merge(h, kept, w)
        if hd is not None:
            with torch.no_grad():
                hd = hd + merge(hd, dropped, None)
        return h, hd


class TokenMerger(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: float, n_positions: int | None = None,
                 local_grid: tuple[int, int] | None = None):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(n_positions, dim)) if n_positions else None
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(MergerBlock(dim, heads, mlp_ratio, local_grid) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, sel: Selection) -> Merged:
        """x [B, N, D] features, sel the keep/drop decisions -> the kept tokens merged."""
        if self.pos is not None:
            x = x + self.pos                                               # [B, N, D]
        lay = Layout.of(x, sel)
        h = lay.kept.take(x)                                               # [T, D]
        hd = lay.dropped.take(x).detach() if lay.straight_through else None   # [Td, D]
        for block in self.blocks:
            h, hd = block(h, lay, hd)
        h = self.norm(h)
        full = None
        if hd is not None:
            with torch.no_grad():
                hd = self.norm(hd)
            full = lay.dropped.scatter(hd, lay.kept.scatter(h, x.new_zeros(x.shape)))   # [B, N, D]
        return Merged(lay.kept.pad(h), lay.kept.lengths, lay.kept.positions, full)
