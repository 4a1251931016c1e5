"""The feature decoder: reconstructs all N patch features from an image's (variable number of) codes.

Codes ``[B, M, C]`` -> Linear to the width + a learned embedding of the code's index in the sequence (the
generated code sequence is all the decoder gets, so where things are must come from the codes and their
order). N learned queries (one per patch) pass L blocks of self-attention among the queries,
cross-attention to the codes (padding masked; a learned per-head bias between query position and code index
gives the routing a head start: at CPU scale content-only routing learns too slowly) and an FFN; LN; a tanh MLP maps to the feature width.
The tokenizer trains it with a cosine loss against the encoder's features (LaVIT's "semantic
reconstruction"); at generation time it turns the LLM's codes into features for the pixel decoder.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import KeyMaskedAttention
from .merger import FeedForward


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, n_queries: int):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ffn = (nn.LayerNorm(dim) for _ in range(3))
        # learned bias per head between each query (patch position) and each code index: where in the image
        # the j-th code of the raster-ordered sequence tends to belong (content refines it)
        self.position_bias = nn.Parameter(torch.zeros(heads, n_queries, n_queries))   # [H, N, M_max]
        self.self_attn = KeyMaskedAttention(dim, heads)
        self.cross_attn = KeyMaskedAttention(dim, heads)
        self.ffn = FeedForward(dim, mlp_ratio * dim)

    def forward(self, h: torch.Tensor, codes: torch.Tensor, valid: torch.Tensor, seq_index: torch.Tensor,
                key_weight: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = h.shape
        hn = self.norm_self(h)
        h = h + self.self_attn(hn, hn, None, torch.ones(B, N, dtype=torch.bool))
        bias = self.position_bias[:, :, seq_index].permute(2, 0, 1, 3)     # [B, H, N, M]
        h = h + self.cross_attn(self.norm_cross(h), codes, None, valid, key_weight, bias)
        return h + self.ffn(self.norm_ffn(h))


class FeatureDecoder(nn.Module):
    def __init__(self, code_dim: int, dim: int, out_dim: int, n_queries: int, heads: int, layers: int,
                 mlp_ratio: int):
        super().__init__()
        self.inp = nn.Linear(code_dim, dim)
        self.seq_pos = nn.Parameter(torch.randn(n_queries, dim) * 0.02)      # index of a code in its sequence
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)      # one per patch
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio, n_queries) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, out_dim))

    def forward(self, codes: torch.Tensor, valid: torch.Tensor, seq_index: torch.Tensor | None = None,
                key_weight: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, M, C] (M <= n_queries), valid [B, M] bool -> features [B, N, out_dim].

        Training passes every patch position's code (M = N) with ``valid`` = the keep decision, ``seq_index``
        = each kept code's index in the kept sequence and ``key_weight`` = the selector's straight-through
        weights: the same forward as the gathered codes, plus a gradient for every keep/drop decision.
        """
        B, M, _ = codes.shape
        if M > self.seq_pos.shape[0]:
            raise ValueError(f"feature decoder: {M} codes for an image, at most {self.seq_pos.shape[0]}")
        if seq_index is None:
            seq_index = torch.arange(M).expand(B, M)                         # gathered codes: 0..M-1
        c = self.inp(codes) + self.seq_pos[seq_index]                        # [B, M, D]
        h = self.queries.expand(B, -1, -1)                                   # [B, N, D]
        for block in self.blocks:
            h = block(h, c, valid, seq_index, key_weight)
        return self.out(self.norm(h))                                        # [B, N, out_dim]
