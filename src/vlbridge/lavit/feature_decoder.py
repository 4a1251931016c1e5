"""The feature decoder: reconstructs all N patch features from an image's (variable number of) codes.

Codes ``[B, M, C]`` -> Linear to the width + a learned embedding of the code's index in the sequence. N learned
queries (one per patch) pass L blocks of self-attention among the queries, cross-attention to the codes
(padding masked) and an FFN; LN; a tanh MLP maps to the feature width. The tokenizer trains it with a cosine
loss against the encoder's features (LaVIT's "semantic reconstruction"); at generation time it turns the LLM's
codes into features for the pixel decoder.

Where a code belongs: the generated code sequence is all the decoder gets, so a small head reads each code's
patch position (y, x in [0, 1]) from the code itself (``where``), supervised in tokenizer training by the kept
token's real raster position; the cross-attention logits get ``-scale_h * |query position - code position|^2``
(a learned scale per head). With the position read-out the codes learn to carry where they are, as the code
vocabulary must if the LLM is to draw layouts with it; routing by content alone does not learn the layout at
CPU scale.

Tokenizer training places the kept codes at their true patch positions (``positions``; teacher forcing) in
both phases: routing by the read-out *while it is being learnt* leaves the decoder on a blurred routing where
object patches come back as "an object", although the codes carry colour and shape. Decoding code ids places
them at their read-out snapped to strictly increasing patch centres (``align``): kept tokens are written in
raster order, one per patch. This placement aid is a CPU-scale deviation (measurements: docs/notes/lavit.md);
LaVIT's decoder has only the codes and their sequence index.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import KeyMaskedAttention
from .merger import FeedForward


def grid_positions(grid: tuple[int, int]) -> torch.Tensor:
    """[rows*cols, 2] patch centres (y, x) in [0, 1], raster order."""
    rows, cols = grid
    y = (torch.arange(rows) + 0.5) / rows
    x = (torch.arange(cols) + 0.5) / cols
    return torch.stack(torch.meshgrid(y, x, indexing="ij"), -1).reshape(-1, 2)


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, distance_scale: float = 55.0):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ffn = (nn.LayerNorm(dim) for _ in range(3))
        self.log_scale = nn.Parameter(torch.full((heads,), math.log(distance_scale)))   # learned, per head
        self.self_attn = KeyMaskedAttention(dim, heads)
        self.cross_attn = KeyMaskedAttention(dim, heads)
        self.ffn = FeedForward(dim, mlp_ratio * dim)

    def forward(self, h: torch.Tensor, codes: torch.Tensor, valid: torch.Tensor, dist2: torch.Tensor,
                key_weight: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = h.shape
        hn = self.norm_self(h)
        h = h + self.self_attn(hn, hn, None, torch.ones(B, N, dtype=torch.bool))
        bias = -self.log_scale.exp()[None, :, None, None] * dist2[:, None]    # [B, H, N, M]
        h = h + self.cross_attn(self.norm_cross(h), codes, None, valid, key_weight, bias)
        return h + self.ffn(self.norm_ffn(h))


class FeatureDecoder(nn.Module):
    def __init__(self, code_dim: int, dim: int, out_dim: int, grid: tuple[int, int], heads: int, layers: int,
                 mlp_ratio: int, distance_scale: float = 55.0, snap: bool = True):
        super().__init__()
        self.snap = snap
        n = grid[0] * grid[1]
        self.register_buffer("query_pos", grid_positions(grid), persistent=False)   # [N, 2]
        self.inp = nn.Linear(code_dim, dim)
        self.seq_pos = nn.Parameter(torch.randn(n, dim) * 0.02)             # index of a code in its sequence
        self.queries = nn.Parameter(torch.randn(n, dim) * 0.02)             # one per patch
        self.where = nn.Sequential(nn.Linear(code_dim, dim), nn.GELU(), nn.Linear(dim, 2), nn.Sigmoid())
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio, distance_scale) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, out_dim))

    def locate(self, codes: torch.Tensor) -> torch.Tensor:
        """Each code's patch position (y, x) in [0, 1]: [B, M, C] -> [B, M, 2]."""
        return self.where(codes)

    @torch.no_grad()
    def align(self, where: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Snap read-out positions [B, M, 2] of gathered codes (raster order, ``valid`` [B, M] a prefix) to
        patch centres: the strictly increasing raster indices closest (squared distance, summed) to them,
        by dynamic programming. Kept tokens are written in raster order, one per patch, so this is the
        placement they can have; a read-out off by less than half a patch comes back exact."""
        B, M, _ = where.shape
        N = self.query_pos.shape[0]
        out = where.clone()
        for b in range(B):
            m = int(valid[b].sum())
            if m == 0 or m > N:
                continue
            cost = ((where[b, :m, None, :] - self.query_pos[None]) ** 2).sum(-1)      # [m, N]
            total = torch.full((m, N), float("inf"))
            back = torch.zeros(m, N, dtype=torch.long)
            total[0] = cost[0]
            for i in range(1, m):
                best, arg = torch.cummin(total[i - 1], 0)                 # best over k <= j
                total[i, 1:] = cost[i, 1:] + best[:-1]                    # k < j
                back[i, 1:] = arg[:-1]
            j = int(total[m - 1].argmin())
            index = [j]
            for i in range(m - 1, 0, -1):
                j = int(back[i, j])
                index.append(j)
            out[b, :m] = self.query_pos[torch.tensor(index[::-1])]
        return out

    def forward(self, codes: torch.Tensor, valid: torch.Tensor, seq_index: torch.Tensor | None = None,
                key_weight: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, M, C] (M <= N), valid [B, M] bool -> features [B, N, out_dim].

        ``positions`` [B, M, 2] places the codes (tokenizer training passes the kept tokens' true patch
        positions); None = each code's own read-out ``locate(codes)``, the only option at generation time,
        snapped to increasing patch centres (``align``) when ``snap`` (gathered codes in raster order).

        Training passes every patch position's code (M = N) with ``valid`` = the keep decision, ``seq_index``
        = each kept code's index in the kept sequence and ``key_weight`` = the selector's straight-through
        weights: the same forward as the gathered codes, plus a gradient for every keep/drop decision.
        """
        B, M, _ = codes.shape
        if M > self.seq_pos.shape[0]:
            raise ValueError(f"feature decoder: {M} codes for an image, at most {self.seq_pos.shape[0]}")
        if seq_index is None:
            seq_index = torch.arange(M).expand(B, M)                        # gathered codes: 0..M-1
        c = self.inp(codes) + self.seq_pos[seq_index]                       # [B, M, D]
        if positions is None:
            positions = self.locate(codes)                                  # [B, M, 2]
            if self.snap:
                positions = self.align(positions, valid)
        where = positions
        dist2 = ((self.query_pos[None, :, None, :] - where[:, None, :, :]) ** 2).sum(-1)   # [B, N, M]
        h = self.queries.expand(B, -1, -1)                                  # [B, N, D]
        for block in self.blocks:
            h = block(h, c, valid, dist2, key_weight)
        return self.out(self.norm(h))                                       # [B, N, out_dim]
