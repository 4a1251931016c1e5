"""The feature decoder: reconstructs all N patch features from an image's (variable number of) codes.

Codes ``[B, M, C]`` -> Linear to the width + a learned embedding of the code's index in the sequence (the
generated code sequence is all the decoder gets, so where things are must come from the codes and their
order). N learned queries (one per patch) pass L blocks of self-attention among the queries,
cross-attention to the codes (padding masked) and an FFN; LN; a tanh MLP maps to the feature width.
The tokenizer trains it with a cosine loss against the encoder's features (LaVIT's "semantic
reconstruction"); at generation time it turns the LLM's codes into features for the pixel decoder.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import KeyMaskedAttention
from .merger import FeedForward


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ffn = (nn.LayerNorm(dim) for _ in range(3))
        self.self_attn = KeyMaskedAttention(dim, heads)
        self.cross_attn = KeyMaskedAttention(dim, heads)
        self.ffn = FeedForward(dim, mlp_ratio * dim)

    def forward(self, h: torch.Tensor, codes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, N, _ = h.shape
        hn = self.norm_self(h)
        h = h + self.self_attn(hn, hn, None, torch.ones(B, N, dtype=torch.bool))
        h = h + self.cross_attn(self.norm_cross(h), codes, None, valid)
        return h + self.ffn(self.norm_ffn(h))


class FeatureDecoder(nn.Module):
    def __init__(self, code_dim: int, dim: int, out_dim: int, n_queries: int, heads: int, layers: int,
                 mlp_ratio: int):
        super().__init__()
        self.inp = nn.Linear(code_dim, dim)
        self.seq_pos = nn.Parameter(torch.randn(n_queries, dim) * 0.02)      # index of a code in its sequence
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)      # one per patch
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, out_dim))

    def forward(self, codes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """codes [B, M, C] (M <= n_queries), valid [B, M] bool -> features [B, N, out_dim]."""
        B, M, _ = codes.shape
        if M > self.seq_pos.shape[0]:
            raise ValueError(f"feature decoder: {M} codes for an image, at most {self.seq_pos.shape[0]}")
        c = self.inp(codes) + self.seq_pos[:M]                               # [B, M, D]
        h = self.queries.expand(B, -1, -1)                                   # [B, N, D]
        for block in self.blocks:
            h = block(h, c, valid)
        return self.out(self.norm(h))                                        # [B, N, out_dim]
