"""`resampler`: the Perceiver resampler (Flamingo; Qwen-VL's is a one-layer variant). M = num_latents.

A fixed set of learned latents ``[R, H]`` reads the visual features through L pre-LN layers:
``x = x + Attn(q = LN(x), kv = [LN(features); LN(x)])`` then ``x = x + FFN(LN(x))`` — keys and values are
the concatenation of the features and the latents, as in Flamingo. Attention has ``heads x head_dim``
inner width and no biases, the FFN is ``Linear(H, ff_mult H) - GELU - Linear`` (Flamingo: 6 layers, 64
latents, 8 heads of 64, ff_mult 4). A final LayerNorm, then a Linear to the LLM width.

Latents live at width ``hidden`` (None = the vision width, as in Flamingo, where the features enter the
attention directly); a different width adds a Linear from the features to it.

Without a position embedding the output does not depend on the order of the patches (attention pools a
set). ``pos_embed`` adds one to the patch features (keys and values): ``sincos`` = fixed 2-D sin-cos of
(row, col) (Qwen-VL; half the channels encode the row, half the column), ``learned`` = one learned vector
per patch (N(0, 0.02)). Flamingo itself adds only learned time embeddings (one frame here: none). CLS/prefix
tokens kept by the encoder get no position embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import opt
from .base import Connector, ConnectorOutput, VisualFeatures

POS_EMBEDS = ("none", "sincos", "learned")


@dataclass
class ResamplerOptions:
    num_latents: int = opt(64, "learned latents = visual tokens per image (Flamingo: 64)")
    layers: int = opt(6, "Perceiver layers (Flamingo: 6)")
    hidden: int | None = opt(None, "latent width; None = the vision width (Flamingo)")
    heads: int = opt(8, "attention heads (Flamingo: 8)")
    head_dim: int = opt(64, "width per attention head (Flamingo: 64)")
    ff_mult: int = opt(4, "FFN width = ff_mult * hidden (Flamingo: 4)")
    pos_embed: str = opt("none", "\"none\", \"sincos\" (fixed 2-D, Qwen-VL) or \"learned\" (per patch)")


def sincos_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding [rows*cols, dim] (raster order): dim/2 for the row, dim/2 for the col."""
    if dim % 4:
        raise ValueError(f"resampler connector: sincos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    freq = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)                  # [dim/4]
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    parts = []
    for pos in (r.flatten(), c.flatten()):
        angle = pos[:, None] * freq[None]                                                          # [N, dim/4]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, 1).float()                                                             # [N, dim]


class ResamplerLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int, ff_mult: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm_media, self.norm_latents = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.to_q = nn.Linear(hidden, inner, bias=False)
        self.to_kv = nn.Linear(hidden, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, hidden, bias=False)
        self.ffn = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, ff_mult * hidden, bias=False), nn.GELU(),
                                 nn.Linear(ff_mult * hidden, hidden, bias=False))

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # media [B, N, H], latents [B, R, H]
        B, R, _ = latents.shape
        lat = self.norm_latents(latents)
        kv_in = torch.cat([self.norm_media(media), lat], 1)                          # [B, N+R, H]
        q = self.to_q(lat).view(B, R, self.heads, -1).transpose(1, 2)               # [B, h, R, d]
        k, v = self.to_kv(kv_in).view(B, kv_in.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # [B, h, N+R, d]
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, R, -1)  # [B, R, h*d]
        latents = latents + self.to_out(a)
        return latents + self.ffn(latents)                                           # [B, R, H]


class ResamplerConnector(Connector):
    Options = ResamplerOptions

    def __init__(self, options: ResamplerOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        o = options
        for name in ("num_latents", "layers", "heads", "head_dim", "ff_mult"):
            if getattr(o, name) < 1:
                raise ValueError(f"resampler connector: {name} must be >= 1, got {getattr(o, name)}")
        if o.pos_embed not in POS_EMBEDS:
            raise ValueError(f"resampler connector: pos_embed must be one of {POS_EMBEDS}, got {o.pos_embed!r}")
        self.hidden = o.hidden or vis_dim
        n = self.grid[0] * self.grid[1]
        self.input_proj = nn.Linear(vis_dim, self.hidden) if self.hidden != vis_dim else nn.Identity()
        if o.pos_embed == "sincos":
            self.register_buffer("pos", sincos_2d(*self.grid, self.hidden), persistent=False)  # [N, H]
        elif o.pos_embed == "learned":
            self.pos = nn.Parameter(torch.randn(n, self.hidden) * 0.02)                   # [N, H]
        self.latents = nn.Parameter(torch.randn(o.num_latents, self.hidden) * 0.02)       # [R, H]
        self.layers = nn.ModuleList(ResamplerLayer(self.hidden, o.heads, o.head_dim, o.ff_mult)
                                    for _ in range(o.layers))
        self.norm = nn.LayerNorm(self.hidden)
        self.proj = nn.Linear(self.hidden, llm_dim)

    def _add_positions(self, media: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        n = grid[0] * grid[1]
        if tuple(grid) != self.grid or media.shape[1] < n:
            raise ValueError(f"resampler connector: built for a {self.grid} patch grid with a position embedding, "
                             f"got grid {tuple(grid)} with {media.shape[1]} tokens")
        prefix = media.shape[1] - n                                                  # CLS/prefix tokens: no position
        return torch.cat([media[:, :prefix], media[:, prefix:] + self.pos], 1)

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        media = self.input_proj(feats.features)                                      # [B, N, H]
        if self.options.pos_embed != "none":
            media = self._add_positions(media, feats.grid)
        x = self.latents.expand(media.shape[0], -1, -1)                              # [B, R, H]
        for layer in self.layers:
            x = layer(media, x)
        return ConnectorOutput(tokens=self.proj(self.norm(x)))                       # [B, R, D_llm]

    def checkpoint_blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def num_tokens(self) -> int:
        return self.options.num_latents

    def flops(self, batch: int = 1) -> int:
        """2 x MACs of the projections, attention scores/values and FFNs (norms ignored)."""
        o = self.options
        R, H, N = o.num_latents, self.hidden, self.grid[0] * self.grid[1]
        inner = o.heads * o.head_dim
        macs = N * self.vis_dim * H if H != self.vis_dim else 0                      # input projection
        per_layer = (R * H * inner + (N + R) * H * 2 * inner                         # q; k, v over [features; latents]
                     + 2 * R * (N + R) * inner                                        # scores, values
                     + R * inner * H + R * 2 * H * o.ff_mult * H)                     # out; FFN
        macs += o.layers * per_layer + R * H * self.llm_dim                           # + output projection
        return 2 * batch * macs

