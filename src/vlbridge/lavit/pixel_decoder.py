"""A small conv pixel decoder: a grid of (reconstructed) patch features -> an RGB image.

Features ``[B, rows*cols, D]`` are laid out as a ``[B, D, rows, cols]`` map, then each stage doubles the
resolution (nearest upsampling + a 3x3 conv, GELU) until ``rows * 2^stages`` = the image side; a last 3x3 conv
and a 1x1 conv give, per pixel, logits over a *palette* of K colours (the training images' most frequent
colours, set by ``fit_palette``). Trained with cross-entropy against each pixel's nearest palette colour,
class-balanced (weight = share^-1/2, background = 1: otherwise uncertain object pixels all go to the
dominant background colour); an image is the argmax colour per pixel.

Why this decoder: LaVIT renders with a diffusion U-Net, which on a CPU needs tens of denoising passes per
image and far more training than a few minutes allow. ShapesWorld images are flat palette colours, so one
conv pass that classifies each pixel's colour recovers them crisply; a regression decoder (L1/MSE) trained on
uncertain reconstructed features outputs the per-pixel median/mean instead — the background, or washed-out
blobs the checker cannot read (measurements: docs/notes/lavit.md). On photos the palette would act as a colour
quantisation (like a 16-colour GIF).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PixelDecoder(nn.Module):
    def __init__(self, in_dim: int, grid: tuple[int, int], image_size: int, channels: list[int], palette: int = 16):
        super().__init__()
        rows, cols = grid
        scale = image_size / rows
        stages = round(math.log2(scale)) if scale >= 1 else -1
        if rows != cols or stages < 0 or 2 ** stages != scale or len(channels) < stages:
            raise ValueError(f"pixel decoder: a square grid {grid} must reach image size {image_size} by x2 "
                             f"stages (have {len(channels)} channel entries)")
        self.grid, self.image_size = (rows, cols), image_size
        dims = [in_dim] + list(channels[:stages])
        layers: list[nn.Module] = [nn.Conv2d(in_dim, in_dim, 3, padding=1), nn.GELU()]
        for c_in, c_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU()]
        layers += [nn.Conv2d(dims[-1], dims[-1], 3, padding=1), nn.GELU(), nn.Conv2d(dims[-1], palette, 1)]
        self.net = nn.Sequential(*layers)
        self.register_buffer("palette", torch.zeros(palette, 3))          # [K, 3] RGB in [0, 1]
        self.register_buffer("class_weight", torch.ones(palette))         # [K] loss weight per colour

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        B, N, D = features.shape
        x = features.transpose(1, 2).reshape(B, D, *self.grid)             # [B, D, rows, cols]
        return self.net(x)                                                 # [B, K, S, S]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features [B, N, D] -> RGB [B, 3, S, S] in [0, 1] (argmax palette colour per pixel)."""
        return self.palette[self.logits(features).argmax(1)].permute(0, 3, 1, 2)

    @torch.no_grad()
    def fit_palette(self, pixels: torch.Tensor, min_share: float = 1e-4) -> int:
        """Palette = the most frequent colours of pixels [n, 3, S, S] (at least min_share of all pixels, at most
        K); unused entries repeat the most frequent colour. Returns how many distinct colours it holds."""
        cols = (pixels.permute(0, 2, 3, 1).reshape(-1, 3) * 255).round().to(torch.int64)
        uniq, counts = torch.unique(cols, dim=0, return_counts=True)
        order = counts.argsort(descending=True)
        keep = order[counts[order] >= min_share * counts.sum()][: len(self.palette)]
        colours = uniq[keep].float() / 255
        self.palette.copy_(colours[0].expand_as(self.palette))
        self.palette[: len(colours)] = colours
        share = torch.bincount(self.targets(pixels).flatten(), minlength=len(self.palette)).float()
        share = share / share.sum()
        weight = share.clamp_min(1e-6) ** -0.5                              # class-balanced, softened
        self.class_weight.copy_(torch.where(share > 0, weight / weight[share.argmax()], torch.zeros_like(weight)))
        return len(colours)

    def targets(self, pixels: torch.Tensor) -> torch.Tensor:
        """Nearest palette index per pixel: [n, 3, S, S] -> [n, S, S]."""
        d = ((pixels.permute(0, 2, 3, 1)[..., None, :] - self.palette) ** 2).sum(-1)    # [n, S, S, K]
        return d.argmin(-1)

    def loss(self, features: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(features), self.targets(pixels), weight=self.class_weight)
