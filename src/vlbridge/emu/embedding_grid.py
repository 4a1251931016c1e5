"""From an image's M visual embeddings to a grid of patch features: the first half of every Emu decoder.

The embeddings (LayerNorm'd, projected, plus a learned embedding of their index 1..M) are the memory; one
learned query per patch of the grid passes L pre-LN blocks of self-attention among the queries,
cross-attention to the embeddings and an FFN; a LayerNorm and a Linear give ``[B, rows*cols, out_dim]``.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Block


class EmbeddingsToGrid(nn.Module):
    def __init__(self, llm_dim: int, num_tokens: int, grid: tuple[int, int], dim: int, layers: int, heads: int,
                 out_dim: int):
        super().__init__()
        self.grid = tuple(grid)
        self.inp = nn.Sequential(nn.LayerNorm(llm_dim), nn.Linear(llm_dim, dim))
        self.index = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(grid[0] * grid[1], dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, kv_dim=dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        memory = self.inp(embeddings) + self.index[: embeddings.shape[1]]        # [B, M, dim]
        x = self.queries.expand(embeddings.shape[0], -1, -1)                     # [B, N, dim]
        for block in self.blocks:
            x = block(x, memory)
        return self.out(self.norm(x))                                            # [B, N, out_dim]
