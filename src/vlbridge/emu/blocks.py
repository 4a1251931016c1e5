"""Pre-LN transformer blocks on SDPA: self-attention (optionally causal), optional cross-attention, FFN.

Used by the Causal Transformer (queries attend causally to earlier queries and to the image features) and by
the decoders' embedding-to-grid module (patch queries attend to each other and to the M embeddings).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, causal: bool = False) -> torch.Tensor:
        B, Nq, D = x.shape
        q = self.q(x).view(B, Nq, self.heads, -1).transpose(1, 2)                  # [B, H, Nq, hd]
        k, v = self.kv(kv).view(B, kv.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)   # each [B, H, Nk, hd]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)            # [B, H, Nq, hd]
        return self.o(out.transpose(1, 2).reshape(B, Nq, D))


class Block(nn.Module):
    """x = x + SelfAttn(LN x) [causal]; x = x + CrossAttn(LN x, memory) [if kv_dim]; x = x + FFN(LN x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, kv_dim: int | None = None, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.norm_self, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads, kv_dim) if kv_dim else None
        self.norm_cross = nn.LayerNorm(dim) if kv_dim else None
        self.ffn = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, causal=self.causal)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), memory)
        return x + self.ffn(self.norm_ffn(x))
