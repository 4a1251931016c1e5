"""`groma`: Groma's localized visual tokenization — image tokens plus ONE token per proposed region.

Image tokens for the LLM come from an inner connector (``image_connector``, default ``mlp``; Groma uses a
2x2 space-to-depth MLP, i.e. ``pixel_shuffle``). The grounding parts live in ``vlbridge.grounding``:

- ``proposer`` (``DenseProposer``): class-agnostic boxes from ``proposer_layers``, trained in the ``det``
  stage on a frozen encoder; at inference score threshold, NMS and top ``max_regions``;
- ``region_encoder`` (``RegionEncoder``): RoIAlign on corner boxes over ``region_layers`` (which may be an
  earlier, higher-resolution map than the LLM's image tokens), one LLM-width token per region.

The model (``grounding.region_wiring``) lists the regions after the image tokens as ``<r0> f0 <r1> f1 …``,
turns boxes in the text into ``<roi><rj></roi>`` and back. The widths of the chosen encoder layers are read
from the encoder when the model is built (``bind_vision``, a dry run; the saved vision config makes it
reproducible); a connector built alone assumes the connector's input width for every layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..grounding.feature_maps import encode_with_hidden_states, select_maps
from ..grounding.proposer import DenseProposer
from ..grounding.region_encoder import RegionEncoder
from ..grounding.region_tokens import region_vocabulary
from .base import Connector, ConnectorOutput, VisualFeatures


@dataclass
class GromaOptions:
    image_connector: str = "mlp"          # inner connector for the LLM's image tokens (Groma: 2x2 pixel_shuffle)
    image_options: dict = field(default_factory=dict)
    max_regions: int = 8                  # proposals listed per image (Groma: up to 100)
    max_user_regions: int = 4             # extra index tokens for the user's own boxes
    proposer_layers: list[int] = field(default_factory=lambda: [-1])   # encoder hidden states for the proposer
    region_layers: list[int] = field(default_factory=lambda: [-1])     # ... and for the region encoder
    dim: int = 64                         # proposer / region-encoder channels
    proposer_convs: int = 2
    hidden: int = 256                     # region-encoder hidden width
    roi_size: int = 4                     # RoIAlign output S x S (Groma: 14)
    sampling_ratio: int = 2               # bilinear samples per bin side (Groma: 2)
    score_threshold: float = 0.15         # proposals kept at inference (Groma: 0.15) ...
    nms_iou: float = 0.6                  # ... after NMS at this IoU (Groma: 0.6)
    gt_score: float = 0.2                 # training: score of ground-truth boxes added to the candidates
    user_feature: bool = True             # splice the region feature after a user's box (Groma's <refer_feat>)
    tag_features: bool = False            # add the index token's embedding to its region feature


class GromaConnector(Connector):
    Options = GromaOptions
    dynamic = True
    proposes_regions = True

    def __init__(self, options: GromaOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        from . import build_connector                                   # the registry imports this module
        if options.image_connector == "groma":
            raise ValueError("groma connector: image_connector cannot be 'groma'")
        if options.max_regions < 1 or options.max_user_regions < 0:
            raise ValueError("groma connector: max_regions must be >= 1 and max_user_regions >= 0")
        self.image = build_connector(options.image_connector, dict(options.image_options), vis_dim, llm_dim, grid)
        self.patch_size: int | None = None
        self._build_grounding([vis_dim] * len(options.proposer_layers), [vis_dim] * len(options.region_layers))

    def _build_grounding(self, proposer_dims: list[int], region_dims: list[int]) -> None:
        o = self.options
        self.layer_dims = [list(proposer_dims), list(region_dims)]
        self.proposer = DenseProposer(list(proposer_dims), o.dim, o.proposer_convs)
        self.region_encoder = RegionEncoder(list(region_dims), self.llm_dim, o.dim, o.hidden, o.roi_size,
                                            o.sampling_ratio)

    def bind_vision(self, tower) -> None:
        """Read the widths of the proposer/region layers from the encoder (one dry run) and rebuild to match."""
        self.patch_size = tower.patch_size
        with torch.no_grad(), torch.random.fork_rng():
            _, hidden = encode_with_hidden_states(tower, torch.zeros(1, 3, tower.image_size, tower.image_size))
        size = (tower.image_size, tower.image_size)
        dims = [[m.shape[1] for m in select_maps(hidden, layers, size, self.patch_size)]
                for layers in (self.options.proposer_layers, self.options.region_layers)]
        if dims != self.layer_dims:
            self._build_grounding(*dims)

    def added_tokens(self) -> list[str]:
        return region_vocabulary(self.num_region_tokens())

    def num_region_tokens(self) -> int:
        return self.options.max_regions + self.options.max_user_regions

    # ---- the LLM's image tokens ---------------------------------------------------------------------
    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        return self.image(feats)                                         # [B, M, D_llm]

    def num_tokens(self) -> int:
        """Image tokens + the region list (index token + feature per region) + the user-box features."""
        return self.image.num_tokens() + 2 * self.options.max_regions + 3 * self.options.max_user_regions

    # ---- regions ---------------------------------------------------------------------------------------
    def proposer_maps(self, hidden, image_hw) -> list[torch.Tensor]:
        return select_maps(hidden, self.options.proposer_layers, image_hw, self.patch_size)

    def region_maps(self, hidden, image_hw) -> list[torch.Tensor]:
        return select_maps(hidden, self.options.region_layers, image_hw, self.patch_size)

    @torch.no_grad()
    def propose(self, hidden, image_hw) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image: kept proposal boxes [K, 4] and scores [K], best first."""
        o = self.options
        out = self.proposer(self.proposer_maps(hidden, image_hw))
        return self.proposer.propose(out, o.score_threshold, o.nms_iou, o.max_regions)

    def encode_regions(self, hidden, image_hw, boxes: list[torch.Tensor]) -> torch.Tensor:
        """One token per box: boxes [R_b, 4] per image -> [sum R_b, D_llm]."""
        return self.region_encoder(self.region_maps(hidden, image_hw), boxes)

    def adjust_stage(self, model, stage: str) -> None:
        from ..grounding.stages import apply_region_stage
        apply_region_stage(model, stage)
