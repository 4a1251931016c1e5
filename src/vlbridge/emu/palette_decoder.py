"""The palette decoder: M embeddings -> the encoder's patch features -> a palette colour per pixel, in one pass.

LaVIT's decoder family, fed with Emu's embeddings: ``EmbeddingsToGrid`` predicts the encoder's patch features
[B, N, D_vis] from the M embeddings, and LaVIT's conv pixel decoder (``lavit.pixel_decoder``) upsamples features
and classifies each pixel into one of K palette colours (the training images' most frequent ones; class-balanced
cross-entropy). Trained with three terms when the images' real encoder features are given: the pixels from the
predicted features, the cosine between predicted and real features (a dense target: every patch, every
channel), and the pixels from the real features (so the pixel decoder learns to draw from clean features as
well). Deterministic: one image per set of embeddings. Why a classifier rather than a regressor, and what it
costs on photos, is in the pixel decoder's docstring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..lavit.pixel_decoder import PixelDecoder
from .embedding_grid import EmbeddingsToGrid


def feature_terms(predicted: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
    """1 - cosine between predicted and real patch features [B, N, D] (0 without real features)."""
    if features is None or features.shape != predicted.shape:
        return predicted.new_zeros(())
    return 1 - F.cosine_similarity(predicted, features, dim=-1).mean()


class PaletteDecoder(nn.Module):
    def __init__(self, llm_dim: int, num_tokens: int, grid: tuple[int, int], image_size: int, dim: int,
                 layers: int, heads: int, channels: list[int], palette: int = 16, feature_dim: int | None = None):
        super().__init__()
        self.image_size = image_size
        feature_dim = feature_dim or dim
        self.to_grid = EmbeddingsToGrid(llm_dim, num_tokens, grid, dim, layers, heads, feature_dim)
        self.pixels = PixelDecoder(feature_dim, grid, image_size, channels, palette)

    def prepare(self, pixels: torch.Tensor) -> None:
        """Fit the palette to training images [n, 3, S, S] in [0, 1]."""
        self.pixels.fit_palette(pixels)

    def loss(self, embeddings: torch.Tensor, pixels: torch.Tensor, generator: torch.Generator | None = None,
             features: torch.Tensor | None = None) -> torch.Tensor:
        predicted = self.to_grid(embeddings)                                   # [B, N, D_vis]
        loss = self.pixels.loss(predicted, pixels) + feature_terms(predicted, features)
        if features is not None and features.shape == predicted.shape:
            loss = loss + self.pixels.loss(features, pixels)
        return loss

    def forward(self, embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Embeddings [B, M, D] -> RGB [B, 3, S, S] in [0, 1]."""
        return self.pixels(self.to_grid(embeddings))
