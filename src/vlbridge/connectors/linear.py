"""`linear`: one Linear layer per patch (LLaVA-1.0's projector). M = N."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import opt
from .base import Connector, ConnectorOutput, VisualFeatures


@dataclass
class LinearOptions:
    bias: bool = opt(True, "a bias in the Linear map")


class LinearConnector(Connector):
    Options = LinearOptions

    def __init__(self, options: LinearOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        self.proj = nn.Linear(vis_dim, llm_dim, bias=options.bias)

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        return ConnectorOutput(tokens=self.proj(feats.features))  # [B, N, D_vis] -> [B, N, D_llm]

    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]
