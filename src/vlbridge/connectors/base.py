"""The connector interface: visual features from the encoder -> visual tokens for the LLM.

A connector receives ``VisualFeatures`` (``features [B, N, D_vis]`` plus the patch grid, the separate
layers and the CLS token) and returns a ``ConnectorOutput``: ``tokens [B, M, D_llm]`` with a per-image
length (dynamic tokenizers and region tokens give a different M per image), optional auxiliary losses
(already weighted; the trainer adds them to the LM loss) and free-form extras.

Each connector declares a typed ``Options`` dataclass; its fields are what ``config.json`` stores, so
loading rebuilds the same module.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class VisualFeatures:
    features: torch.Tensor                 # [B, N, D_vis] patch features (selected layers concatenated on D)
    grid: tuple[int, int]                  # (rows, cols) of the patch grid; N == rows * cols unless CLS is kept
    layers: list[torch.Tensor] = field(default_factory=list)  # each [B, N, D_layer], in feature_layers order
    cls: torch.Tensor | None = None        # [B, P, D_vis] prefix (CLS/register) tokens, if the encoder has them
    text: Any = None                       # optional instruction context (e.g. instruction-aware Q-Former)


@dataclass
class ConnectorOutput:
    tokens: torch.Tensor                   # [B, M_max, D_llm]
    lengths: torch.Tensor | None = None    # [B] valid tokens per image; None = all M_max are valid
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def per_image(self) -> list[torch.Tensor]:
        """The visual tokens of each image, each [M_i, D_llm]."""
        if self.lengths is None:
            return list(self.tokens.unbind(0))
        return [t[: int(n)] for t, n in zip(self.tokens, self.lengths)]


class Connector(nn.Module):
    """Base class. Subclasses set ``Options`` and implement ``forward`` and ``num_tokens``."""

    Options: ClassVar[type] = None
    dynamic: ClassVar[bool] = False        # True when M varies per image (num_tokens is then an upper bound)
    proposes_regions: ClassVar[bool] = False   # True for region-token connectors (groma): a `det` stage first
    trains_tokenizer: ClassVar[bool] = False   # True when a separately trained visual tokenizer comes first (lavit)

    def __init__(self, options, vis_dim: int, llm_dim: int, grid: tuple[int, int]):
        super().__init__()
        self.options = options
        self.vis_dim, self.llm_dim, self.grid = vis_dim, llm_dim, tuple(grid)

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def num_tokens(self) -> int:
        """Visual tokens per image (the maximum, for dynamic connectors)."""
        raise NotImplementedError

    def load_parts(self) -> None:
        """Load separately trained parts named in the options (e.g. LaVIT's tokenizer dir) into a freshly built
        connector. Called when a model is built from its config, never when a saved model is loaded (its
        weights already hold those parts). Default: nothing to load."""

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self, batch: int = 1) -> int:
        """Approximate forward FLOPs: 2 x multiply-accumulates of every Linear on its input tokens."""
        n_in = self.grid[0] * self.grid[1]
        return batch * sum(2 * m.in_features * m.out_features * n_in for m in self.modules() if isinstance(m, nn.Linear))

    def options_dict(self) -> dict:
        return dataclasses.asdict(self.options)
