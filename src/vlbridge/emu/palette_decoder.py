"""The palette decoder: M embeddings -> patch features -> a palette colour per pixel, in one pass.

``EmbeddingsToGrid`` gives the patch features; LaVIT's conv pixel decoder (``lavit.pixel_decoder``) upsamples
them and classifies each pixel into one of K palette colours (the training images' most frequent ones), trained
with class-balanced cross-entropy. Deterministic: one image per set of embeddings. Why a classifier rather
than a regressor, and what it costs on photos, is in that module's docstring.
"""
from __future__ import annotations

import torch
from torch import nn

from ..lavit.pixel_decoder import PixelDecoder
from .embedding_grid import EmbeddingsToGrid


class PaletteDecoder(nn.Module):
    def __init__(self, llm_dim: int, num_tokens: int, grid: tuple[int, int], image_size: int, dim: int,
                 layers: int, heads: int, channels: list[int], palette: int = 16):
        super().__init__()
        self.image_size = image_size
        self.to_grid = EmbeddingsToGrid(llm_dim, num_tokens, grid, dim, layers, heads, dim)
        self.pixels = PixelDecoder(dim, grid, image_size, channels, palette)

    def prepare(self, pixels: torch.Tensor) -> None:
        """Fit the palette to training images [n, 3, S, S] in [0, 1]."""
        self.pixels.fit_palette(pixels)

    def loss(self, embeddings: torch.Tensor, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.pixels.loss(self.to_grid(embeddings), pixels)

    def forward(self, embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Embeddings [B, M, D] -> RGB [B, 3, S, S] in [0, 1]."""
        return self.pixels(self.to_grid(embeddings))
