"""`pixel_shuffle`: space-to-depth of the patch grid by a factor r, then an MLP (nanoVLM, InternVL).

Each r x r block of patches becomes one token whose channels are the block's patch features
concatenated in raster order (nanoVLM's layout):

    out[b, i * (cols / r) + j, (dy * r + dx) * D + d] = x[b, (r i + dy) * cols + (r j + dx), d]

so M = N / r^2 tokens of width r^2 D. Then ``LayerNorm`` (``norm``, InternVL) and an MLP of ``depth``
Linear layers with GELU between them (InternVL: LN + 2 Linear; nanoVLM: one Linear, no norm).

A grid not divisible by r is an error unless ``pad`` is set, which zero-pads the bottom rows and right
columns up to the next multiple of r (so M = ceil(rows / r) x ceil(cols / r)). CLS/prefix tokens kept by
the encoder have no place on the grid and are dropped, as nanoVLM and InternVL do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import opt
from .base import Connector, ConnectorOutput, VisualFeatures


@dataclass
class PixelShuffleOptions:
    factor: int = opt(2, "r: each r x r block of patches -> one token (InternVL: 2)")
    pad: bool = opt(False, "zero-pad a grid not divisible by r (else: error)")
    depth: int = opt(2, "Linear layers after the shuffle (InternVL: 2; nanoVLM: 1)")
    norm: bool = opt(True, "LayerNorm on the shuffled features first (InternVL: yes; nanoVLM: no)")
    hidden: int | None = opt(None, "MLP hidden width; None = the LLM width")


def space_to_depth(x: torch.Tensor, rows: int, cols: int, r: int) -> torch.Tensor:
    """[B, rows*cols, D] raster patches -> [B, (rows/r)*(cols/r), r*r*D] (rows, cols divisible by r)."""
    B, _, D = x.shape
    x = x.view(B, rows // r, r, cols // r, r, D)                     # [B, i, dy, j, dx, D]
    x = x.permute(0, 1, 3, 2, 4, 5)                                  # [B, i, j, dy, dx, D]
    return x.reshape(B, (rows // r) * (cols // r), r * r * D)


class PixelShuffleConnector(Connector):
    Options = PixelShuffleOptions

    def __init__(self, options: PixelShuffleOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        r = options.factor
        if r < 1 or options.depth < 1:
            raise ValueError(f"pixel_shuffle connector: factor and depth must be >= 1, got {r}, {options.depth}")
        rows, cols = self.grid
        if not options.pad and (rows % r or cols % r):
            raise ValueError(f"pixel_shuffle connector: the {rows}x{cols} patch grid is not divisible by factor {r}; "
                             f"use a factor that divides both sides or set pad=true to zero-pad it")
        self.grid_out = (math.ceil(rows / r), math.ceil(cols / r))
        d_in = vis_dim * r * r
        hidden = options.hidden or llm_dim
        dims = [d_in] + [hidden] * (options.depth - 1) + [llm_dim]
        layers: list[nn.Module] = [nn.LayerNorm(d_in)] if options.norm else []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if i:
                layers.append(nn.GELU())
            layers.append(nn.Linear(a, b))
        self.mlp = nn.Sequential(*layers)

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        rows, cols = feats.grid
        x, r = feats.features, self.options.factor
        if (rows, cols) != self.grid or x.shape[1] < rows * cols:
            raise ValueError(f"pixel_shuffle connector: built for a {self.grid} patch grid, got grid "
                             f"{tuple(feats.grid)} with {x.shape[1]} tokens")
        x = x[:, x.shape[1] - rows * cols:]                            # drop CLS/prefix tokens: [B, N, D]
        R, C = self.grid_out[0] * r, self.grid_out[1] * r
        if (R, C) != (rows, cols):                                     # pad: zero rows at the bottom, cols at the right
            x = F.pad(x.view(x.shape[0], rows, cols, -1), (0, 0, 0, C - cols, 0, R - rows)).flatten(1, 2)
        x = space_to_depth(x, R, C, r)                                 # [B, M, r*r*D]
        return ConnectorOutput(tokens=self.mlp(x))                     # [B, M, D_llm]

    def num_tokens(self) -> int:
        return self.grid_out[0] * self.grid_out[1]

    def flops(self, batch: int = 1) -> int:
        """2 x MACs of the MLP on the M shuffled tokens (the shuffle and the norm are ignored)."""
        macs = self.num_tokens() * sum(m.in_features * m.out_features for m in self.mlp if isinstance(m, nn.Linear))
        return 2 * batch * macs
