"""The palette decoder: M embeddings -> the encoder's patch features -> a palette colour per pixel, in one pass.

LaVIT's decoder family, fed with Emu's embeddings, in two parts that train apart: ``to_grid``
(``EmbeddingsToGrid``) predicts the encoder's patch features [B, N, D_vis] from the M embeddings (cosine to the
real features: a dense target, every patch and channel), and the ``renderer``, LaVIT's conv pixel decoder
(``lavit.pixel_decoder``), upsamples features and classifies each pixel into one of K palette colours (the
training images' most frequent ones; class-balanced cross-entropy). The renderer learns from the *real*
features of the encoder, which every model on that encoder shares, so it can be trained once and reused.
Deterministic: one image per set of embeddings. Why a classifier rather than a regressor, and what it costs on
photos, is in the pixel decoder's docstring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..lavit.pixel_decoder import PixelDecoder
from .embedding_grid import EmbeddingsToGrid


def feature_loss(predicted: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """1 - cosine between predicted and real patch features [B, N, D], averaged."""
    return 1 - F.cosine_similarity(predicted, features, dim=-1).mean()


class PaletteDecoder(nn.Module):
    def __init__(self, llm_dim: int, num_tokens: int, grid: tuple[int, int], image_size: int, dim: int,
                 layers: int, heads: int, channels: list[int], palette: int = 16, feature_dim: int | None = None):
        super().__init__()
        self.image_size = image_size
        feature_dim = feature_dim or dim
        self.to_grid = EmbeddingsToGrid(llm_dim, num_tokens, grid, dim, layers, heads, feature_dim)
        self.renderer = PixelDecoder(feature_dim, grid, image_size, channels, palette)

    def prepare(self, pixels: torch.Tensor) -> None:
        """Fit the palette to training images [n, 3, S, S] in [0, 1]."""
        self.renderer.fit_palette(pixels)

    def render_loss(self, features: torch.Tensor, pixels: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """The renderer's loss drawing images [B, 3, S, S] from patch features [B, N, D_vis]."""
        return self.renderer.loss(features, pixels)

    def render(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Patch features [B, N, D_vis] -> RGB [B, 3, S, S] in [0, 1]."""
        return self.renderer(features)

    def forward(self, embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Embeddings [B, M, D] -> RGB [B, 3, S, S] in [0, 1]."""
        return self.render(self.to_grid(embeddings), generator)
