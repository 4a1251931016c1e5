"""`cabstractor`: Honeybee's C-Abstractor — convolutions on the patch grid, pooling, convolutions, MLP.

The patch features are laid out on their ``(rows, cols)`` grid (plus a learned position embedding,
Honeybee's ``pos_emb``), go through ``depth`` residual blocks, adaptive average pooling to the output
token grid ``grid_out``, ``depth`` more blocks, and an MLP readout to the LLM width (``Linear``, then
``mlp_depth - 1`` x ``SiLU, Linear``). M = grid_out rows x cols.

Blocks: RegNet bottlenecks as Honeybee builds them (timm's RegStage with its block defaults, LayerNorm2d,
SiLU): ``1x1 conv - LN - SiLU - 3x3 conv - LN - SiLU - [SE] - 1x1 conv - LN`` plus the shortcut (a 1x1 conv +
LN when the width changes), then SiLU. The 3x3 conv has ``group_size`` channels per group (timm's default
1 = depthwise, as in Honeybee; 0 = a dense conv, a plain ResNet bottleneck). Honeybee's blocks also carry
squeeze-excitation (timm's default ratio 0.25), which gates every channel by a mean over the WHOLE grid and
so breaks locality; here it is off by default (``se_ratio = 0``) and available for fidelity. Without it every
operation is local (norms are LayerNorms over the channels of one position): each block widens the
receptive field by one cell on each side (one patch before pooling, one pooled cell after).

Defaults follow Honeybee (depth 3, MLP depth 2, width = the vision width); the output grid defaults to
half the patch grid per side (24x24 -> 12x12 = Honeybee's 144 tokens at 336 px; 8x8 -> 4x4). CLS/prefix
tokens kept by the encoder have no place on the grid and are dropped, as in Honeybee.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import opt
from .base import Connector, ConnectorOutput, VisualFeatures


@dataclass
class CAbstractorOptions:
    grid_out: list[int] | None = opt(None, "output token grid [rows, cols]; None = half the patch grid per side")
    depth: int = opt(3, "bottleneck blocks before and after the pooling (Honeybee: 3)")
    hidden: int | None = opt(None, "block width; None = the vision width (Honeybee: 1024 for CLIP-L)")
    bottleneck_ratio: float = opt(1.0, "inner width of a block / its output width (RegNet bottle_ratio)")
    group_size: int = opt(1, "channels per group of the 3x3 conv: 1 = depthwise (Honeybee), 0 = dense")
    se_ratio: float = opt(0.0, "squeeze-excitation width / block input width (Honeybee: 0.25; global)")
    mlp_depth: int = opt(2, "Linear layers of the readout (Honeybee: 2)")
    pos_emb: bool = opt(True, "learned position embedding of the patches (Honeybee: True)")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of a [B, C, rows, cols] map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_norm(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), LayerNorm2d(c_out))


class SqueezeExcite(nn.Module):
    """Channel gates from the mean over the whole map: x * sigmoid(W2 SiLU(W1 mean(x)))."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)                                   # [B, C, 1, 1]
        return x * self.fc2(self.act(self.fc1(s))).sigmoid()


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, o: CAbstractorOptions):
        super().__init__()
        mid = max(1, int(round(c_out * o.bottleneck_ratio)))
        if o.group_size and mid % o.group_size:
            raise ValueError(f"cabstractor connector: block width {mid} is not divisible by group_size {o.group_size}")
        groups = mid // o.group_size if o.group_size else 1
        conv3 = nn.Sequential(nn.Conv2d(mid, mid, 3, padding=1, groups=groups, bias=False), LayerNorm2d(mid))
        se = [SqueezeExcite(mid, max(1, int(round(c_in * o.se_ratio))))] if o.se_ratio > 0 else []
        self.body = nn.Sequential(conv_norm(c_in, mid, 1), nn.SiLU(), conv3, nn.SiLU(), *se, conv_norm(mid, c_out, 1))
        self.shortcut = conv_norm(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))                  # [B, C_out, rows, cols]

    def macs(self, positions: int) -> int:
        """Multiply-accumulates on a map of `positions` cells (the SE convs run once, on the pooled map)."""
        se = {id(m) for b in self.body if isinstance(b, SqueezeExcite) for m in (b.fc1, b.fc2)}
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        return sum(m.weight.numel() * (1 if id(m) in se else positions) for m in convs)


class CAbstractorConnector(Connector):
    Options = CAbstractorOptions

    def __init__(self, options: CAbstractorOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        o = options
        rows, cols = self.grid
        self.grid_out = tuple(o.grid_out) if o.grid_out is not None else (max(1, rows // 2), max(1, cols // 2))
        if len(self.grid_out) != 2 or not (1 <= self.grid_out[0] <= rows and 1 <= self.grid_out[1] <= cols):
            raise ValueError(f"cabstractor connector: grid_out must be [rows, cols] within the patch grid "
                             f"{list(self.grid)}, got {o.grid_out}")
        if o.depth < 0 or o.mlp_depth < 1 or o.bottleneck_ratio <= 0 or o.group_size < 0 or o.se_ratio < 0:
            raise ValueError(f"cabstractor connector: need depth >= 0, mlp_depth >= 1, bottleneck_ratio > 0, "
                             f"group_size >= 0, se_ratio >= 0; got {o.depth}, {o.mlp_depth}, {o.bottleneck_ratio}, "
                             f"{o.group_size}, {o.se_ratio}")
        hidden = o.hidden or vis_dim
        self.hidden = hidden
        self.pos = nn.Parameter(torch.randn(rows * cols, vis_dim) * 0.02) if o.pos_emb else None   # [N, D_vis]
        self.stage1 = nn.Sequential(*[Bottleneck(vis_dim if i == 0 else hidden, hidden, o) for i in range(o.depth)])
        self.stage2 = nn.Sequential(*[Bottleneck(hidden, hidden, o) for _ in range(o.depth)])
        width = hidden if o.depth else vis_dim
        readout: list[nn.Module] = [nn.Linear(width, llm_dim)]
        for _ in range(o.mlp_depth - 1):
            readout += [nn.SiLU(), nn.Linear(llm_dim, llm_dim)]
        self.readout = nn.Sequential(*readout)

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        rows, cols = feats.grid
        x = feats.features
        if (rows, cols) != self.grid or x.shape[1] < rows * cols:
            raise ValueError(f"cabstractor connector: built for a {self.grid} patch grid, got grid {tuple(feats.grid)} "
                             f"with {x.shape[1]} tokens")
        x = x[:, x.shape[1] - rows * cols:]                            # drop CLS/prefix tokens: [B, N, D_vis]
        if self.pos is not None:
            x = x + self.pos
        x = x.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)    # [B, D_vis, rows, cols]
        x = self.stage1(x)                                             # [B, C, rows, cols]
        x = F.adaptive_avg_pool2d(x, self.grid_out)                    # [B, C, r_out, c_out]
        x = self.stage2(x)
        x = x.flatten(2).transpose(1, 2)                               # [B, M, C] raster order
        return ConnectorOutput(tokens=self.readout(x))                 # [B, M, D_llm]

    def checkpoint_blocks(self) -> list[nn.Module]:
        return [*self.stage1, *self.stage2]

    def num_tokens(self) -> int:
        return self.grid_out[0] * self.grid_out[1]

    def flops(self, batch: int = 1) -> int:
        """2 x MACs of the convolutions (at their grid) and the readout MLP (norms, pooling ignored)."""
        n_in, m = self.grid[0] * self.grid[1], self.num_tokens()
        macs = sum(b.macs(n_in) for b in self.stage1) + sum(b.macs(m) for b in self.stage2)
        macs += m * sum(l.in_features * l.out_features for l in self.readout if isinstance(l, nn.Linear))
        return 2 * batch * macs
