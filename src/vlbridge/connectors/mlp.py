"""`mlp`: LLaVA-1.5's projector, Linear-GELU-Linear per patch (``depth`` Linear layers). M = N."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import opt
from .base import Connector, ConnectorOutput, VisualFeatures


@dataclass
class MLPOptions:
    depth: int = opt(2, "number of Linear layers (LLaVA-1.5: 2, i.e. \"mlp2x_gelu\")")
    hidden: int | None = opt(None, "hidden width; None = the LLM width (as in LLaVA-1.5)")


class MLPConnector(Connector):
    Options = MLPOptions

    def __init__(self, options: MLPOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        if options.depth < 1:
            raise ValueError(f"mlp connector: depth must be >= 1, got {options.depth}")
        hidden = options.hidden or llm_dim
        dims = [vis_dim] + [hidden] * (options.depth - 1) + [llm_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            if i:
                layers.append(nn.GELU())
            layers.append(nn.Linear(d_in, d_out))
        self.net = nn.Sequential(*layers)

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        return ConnectorOutput(tokens=self.net(feats.features))  # [B, N, D_vis] -> [B, N, D_llm]

    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]
