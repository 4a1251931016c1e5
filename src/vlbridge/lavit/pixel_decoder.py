"""A small conv pixel decoder: a grid of (reconstructed) patch features -> an RGB image in [0, 1].

Features ``[B, rows*cols, D]`` are laid out as a ``[B, D, rows, cols]`` map, then each stage doubles the
resolution (nearest upsampling + a 3x3 conv, GELU) until ``rows * 2^stages`` = the image side; a last 3x3
conv, a 1x1 conv and a sigmoid give RGB. Trained with an L1 loss on ShapesWorld images.

Why not LaVIT's diffusion U-Net: on a CPU a diffusion decoder needs tens of denoising passes per image and
far more training than a few minutes allow; ShapesWorld images are flat colours on a flat background, so a
deterministic regression decoder recovers them in one pass (its known cost, blur on uncertain edges, is
small here) and trains in about a minute.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class PixelDecoder(nn.Module):
    def __init__(self, in_dim: int, grid: tuple[int, int], image_size: int, channels: list[int]):
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
        layers += [nn.Conv2d(dims[-1], dims[-1], 3, padding=1), nn.GELU(), nn.Conv2d(dims[-1], 3, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, N, D = features.shape
        x = features.transpose(1, 2).reshape(B, D, *self.grid)             # [B, D, rows, cols]
        return self.net(x)                                                  # [B, 3, S, S] in [0, 1]
