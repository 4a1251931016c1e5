"""The flow-matching decoder: a small conditional U-Net that transports noise to the image, given M embeddings.

Rectified flow (flow matching with straight paths): for an image x1 in [-1, 1], noise x0 ~ N(0, I) and
t ~ U(0, 1), the net predicts the velocity x1 - x0 at x_t = (1 - t) x0 + t x1 (MSE); sampling integrates
dx/dt = v(x, t) from noise with ``steps`` Euler steps. As the palette decoder, two parts that train apart:
``to_grid`` predicts the encoder's patch features from the embeddings (cosine), and the ``renderer`` is the
U-Net conditioned on patch features (projected and concatenated at its coarsest level, the patch grid; t enters
every conv block as a per-channel scale and shift), trained on the encoder's real features. A sampling decoder commits to one image where the embeddings leave it
uncertain (a one-pass decoder paints the average); the price is ``steps`` passes per image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .embedding_grid import EmbeddingsToGrid


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [B, dim] of t [B] in [0, 1]."""
    freqs = torch.exp(-math.log(1000.0) * torch.arange(dim // 2) / (dim // 2))
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], -1)


class ConvBlock(nn.Module):
    """conv3x3 -> GroupNorm -> FiLM(t) -> GELU -> conv3x3, residual."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, c_out), c_out)
        self.film = nn.Linear(t_dim, 2 * c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(t)[:, :, None, None].chunk(2, 1)
        h = F.gelu(self.norm(self.conv1(x)) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class FlowRenderer(nn.Module):
    """The velocity U-Net: x_t [B, 3, S, S], t [B] and patch features [B, N, D_f] -> v [B, 3, S, S]."""

    def __init__(self, grid: tuple[int, int], image_size: int, dim: int, channels: list[int], feature_dim: int):
        super().__init__()
        rows = grid[0]
        levels = round(math.log2(image_size / rows)) if image_size >= rows else -1
        if grid[0] != grid[1] or levels < 0 or rows * 2 ** levels != image_size or len(channels) < levels:
            raise ValueError(f"flow decoder: a square grid {grid} must reach image size {image_size} by x2 stages "
                             f"(have {len(channels)} channel entries)")
        self.grid = tuple(grid)
        chans = list(channels[:levels])                                   # per level, full resolution first
        self.t_dim = 4 * chans[0] if chans else 64
        self.time = nn.Sequential(nn.Linear(self.t_dim, self.t_dim), nn.GELU(), nn.Linear(self.t_dim, self.t_dim))
        self.cond = nn.Conv2d(feature_dim, dim, 1)
        self.stem = nn.Conv2d(3, chans[0] if chans else dim, 3, padding=1)
        widths = chans + [dim]
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i], self.t_dim) for i in range(levels))
        self.pool = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(levels))
        self.mid = ConvBlock(2 * dim, dim, self.t_dim)                      # image features + condition at the grid
        self.up = nn.ModuleList(ConvBlock(widths[i + 1] + widths[i], widths[i], self.t_dim) for i in range(levels))
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        B, N, D = features.shape
        cond = self.cond(features.transpose(1, 2).reshape(B, D, *self.grid))  # [B, dim, rows, cols]
        te = self.time(time_features(t, self.t_dim))
        h, skips = self.stem(x), []
        for block, pool in zip(self.down, self.pool):
            h = block(h, te)
            skips.append(h)
            h = pool(h)
        h = self.mid(torch.cat([h, cond], 1), te)
        for block, skip in zip(reversed(self.up), reversed(skips)):
            h = block(torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skip], 1), te)
        return self.head(h)


class FlowDecoder(nn.Module):
    def __init__(self, llm_dim: int, num_tokens: int, grid: tuple[int, int], image_size: int, dim: int,
                 layers: int, heads: int, channels: list[int], steps: int = 16, feature_dim: int | None = None):
        super().__init__()
        self.steps, self.image_size = steps, image_size
        feature_dim = feature_dim or dim
        self.renderer = FlowRenderer(grid, image_size, dim, channels, feature_dim)
        self.to_grid = EmbeddingsToGrid(llm_dim, num_tokens, grid, dim, layers, heads, feature_dim)

    def prepare(self, pixels: torch.Tensor) -> None:
        """Nothing to fit (the palette decoder's counterpart)."""

    def render_loss(self, features: torch.Tensor, pixels: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow matching: the velocity at a random point of the straight path from noise to the image."""
        x1 = pixels * 2 - 1                                                     # [B, 3, S, S] in [-1, 1]
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(len(x1), generator=generator)
        xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
        return F.mse_loss(self.renderer(xt, t, features), x1 - x0)

    def render(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Patch features [B, N, D_f] -> RGB [B, 3, S, S] in [0, 1], by ``steps`` Euler steps from seeded noise."""
        B = features.shape[0]
        x = torch.randn(B, 3, self.image_size, self.image_size, generator=generator)
        for i in range(self.steps):
            x = x + self.renderer(x, torch.full((B,), i / self.steps), features) / self.steps
        return (x.clamp(-1, 1) + 1) / 2

    def forward(self, embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Embeddings [B, M, D] -> RGB [B, 3, S, S] in [0, 1]."""
        return self.render(self.to_grid(embeddings), generator)
