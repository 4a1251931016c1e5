"""Emu's Causal Transformer: M learned queries read the image and become M visual embeddings for the LLM.

The encoder's patch features are LayerNorm'd (plus a 2-D position embedding, optional: a ViT's features carry
their positions, a conv net's barely do) and serve as memory; M learned queries pass L pre-LN blocks of
*causal* self-attention among themselves (query i sees queries <= i, so the embeddings form a left-to-right
sequence like text, which the LLM then regresses one by one), cross-attention to the features and an FFN;
a final LayerNorm and a Linear to the LLM width give ``[B, M, D_llm]`` (Emu: 32 queries, 12 layers, width 768).
"""
from __future__ import annotations

import torch
from torch import nn

from ..connectors.resampler import sincos_2d
from .blocks import Block

POSITIONS = ("sincos", "learned", "none")


class CausalTransformer(nn.Module):
    def __init__(self, vis_dim: int, llm_dim: int, num_queries: int, dim: int, layers: int, heads: int,
                 mlp_ratio: int = 4, position: str = "sincos", grid: tuple[int, int] = (1, 1)):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"causal transformer: position must be one of {POSITIONS}, got {position!r}")
        if position == "sincos" and vis_dim % 4:
            raise ValueError(f"causal transformer: a sincos position embedding needs a feature width divisible by "
                             f"4, got {vis_dim}; use position 'learned' or 'none'")
        self.norm_features = nn.LayerNorm(vis_dim)
        n = grid[0] * grid[1]
        if position == "learned":
            self.position = nn.Parameter(torch.zeros(n, vis_dim))                # [N, vis_dim]
        else:
            self.register_buffer("position", sincos_2d(*grid, vis_dim).float() if position == "sincos" else None,
                                 persistent=False)
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, kv_dim=vis_dim, causal=True) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, llm_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        memory = self.norm_features(features)                                  # [B, N, D_vis]
        if self.position is not None:                                          # CLS/prefix tokens get none
            memory = memory + nn.functional.pad(self.position, (0, 0, memory.shape[1] - len(self.position), 0))
        x = self.queries.expand(features.shape[0], -1, -1)                     # [B, M, dim]
        for block in self.blocks:
            x = block(x, memory)
        return self.proj(self.norm(x))                                         # [B, M, D_llm]
