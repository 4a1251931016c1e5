"""`groma`: Groma's localized visual tokenization — image tokens plus ONE token per proposed region.

Image tokens for the LLM come from an inner connector (``image_connector``, default ``mlp``; Groma uses a
2x2 space-to-depth MLP, i.e. ``pixel_shuffle``). The grounding parts live in ``vlbridge.grounding``:

- ``proposer`` (``DenseProposer``): class-agnostic boxes from ``proposer_layers``, trained in the ``det``
  stage on a frozen encoder; at inference score threshold, NMS and top ``max_regions``;
- ``region_encoder`` (``RegionEncoder``): RoIAlign on corner boxes over ``region_layers`` (which may be an
  earlier, higher-resolution map than the LLM's image tokens), one LLM-width token per region.

The encoder returns the layers both read in the same pass (``encoder_layers``). ``arrange`` lists the regions
after the image tokens as ``<r0> f0 <r1> f1 …`` and turns boxes in the text into ``<roi><rj></roi>``
(``grounding.region_sequence``); ``decode_answer`` turns them back into box text. Stages: ``det`` (the
proposer alone, run first), ``align`` (connector and the new token rows) and ``instruct`` (connector and LLM),
the proposer frozen after ``det``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Stage, opt
from ..grounding.proposer import DenseProposer
from ..grounding.region_encoder import RegionEncoder
from ..grounding.region_sequence import arrange_regions, plan_samples
from ..grounding.region_tokens import RegionSequenceBuilder, RegionTokenIds, boxes_to_text, region_vocabulary
from .base import Arranged, Connector, ConnectorOutput, SequenceContext, VisualFeatures


@dataclass
class GromaOptions:
    image_connector: str = opt("mlp", "inner connector for the LLM's image tokens (Groma: 2x2 pixel_shuffle)")
    image_options: dict = opt({}, "options of the inner image connector")
    max_regions: int = opt(8, "proposals listed per image (Groma: up to 100)")
    max_user_regions: int = opt(4, "extra index tokens for the user's own boxes")
    proposer_layers: list[int] = opt([-1], "encoder hidden states the proposer reads (fused at the finest)")
    region_layers: list[int] = opt([-1], "encoder hidden states the region encoder reads")
    dim: int = opt(64, "proposer / region-encoder channels")
    proposer_convs: int = opt(2, "3x3 conv layers of the proposer head")
    hidden: int = opt(256, "region-encoder hidden width")
    roi_size: int = opt(4, "RoIAlign output S x S (Groma: 14)")
    sampling_ratio: int = opt(2, "bilinear samples per RoIAlign bin side (Groma: 2)")
    score_threshold: float = opt(0.15, "proposals kept at inference above this score (Groma: 0.15) ...")
    nms_iou: float = opt(0.6, "... after NMS at this IoU (Groma: 0.6)")
    gt_score: float = opt(0.2, "training: score of ground-truth boxes added to the candidates")
    user_feature: bool = opt(True, "splice the region feature after a user's box (Groma's <refer_feat>)")
    tag_features: bool = opt(False, "add the index token's embedding to its region feature")


class GromaConnector(Connector):
    Options = GromaOptions
    dynamic = True
    pre_stage = "det"
    images_per_sample = 1
    region_tokens = True

    def __init__(self, options: GromaOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        from . import build_connector                                   # the registry imports this module
        if options.image_connector == "groma":
            raise ValueError("groma connector: image_connector cannot be 'groma'")
        if options.max_regions < 1 or options.max_user_regions < 0:
            raise ValueError("groma connector: max_regions must be >= 1 and max_user_regions >= 0")
        self.image = build_connector(options.image_connector, dict(options.image_options), vis_dim, llm_dim, grid)
        self._build_grounding([vis_dim] * len(options.proposer_layers), [vis_dim] * len(options.region_layers))

    def _build_grounding(self, proposer_dims: list[int], region_dims: list[int]) -> None:
        o = self.options
        self.layer_dims = [list(proposer_dims), list(region_dims)]
        self.proposer = DenseProposer(list(proposer_dims), o.dim, o.proposer_convs)
        self.region_encoder = RegionEncoder(list(region_dims), self.llm_dim, o.dim, o.hidden, o.roi_size,
                                            o.sampling_ratio)

    # ---- hooks ---------------------------------------------------------------------------------------------
    def encoder_layers(self) -> list[int]:
        return list(dict.fromkeys(self.options.proposer_layers + self.options.region_layers))

    def bind_vision(self, tower) -> None:
        """Read the widths of the proposer/region layers from the encoder and rebuild to match."""
        shapes = tower.hidden_shapes()
        width = [shape[0] if len(shape) == 3 else shape[-1] for shape in shapes]      # (C, H, W) or (N, D)
        dims = [[width[i] for i in layers] for layers in (self.options.proposer_layers, self.options.region_layers)]
        if dims != self.layer_dims:
            self._build_grounding(*dims)

    def added_tokens(self) -> list[str]:
        return region_vocabulary(self.num_region_tokens())

    def sequence_builder(self, tokenizer, template):
        return RegionSequenceBuilder(tokenizer, template, self.token_ids(tokenizer))

    def token_ids(self, tokenizer) -> RegionTokenIds:
        return RegionTokenIds.from_tokenizer(tokenizer, self.num_region_tokens())

    def arrange(self, ctx: SequenceContext, input_ids, labels, feats: VisualFeatures, out: ConnectorOutput,
                visual: list[torch.Tensor]) -> Arranged:
        if ctx.image_positions != "sequential":
            raise ValueError(f"connector 'groma' lists regions after the image tokens and needs llm.image_positions "
                             f"'sequential' (got {ctx.image_positions!r})")
        token_ids = self.token_ids(ctx.tokenizer)
        plans = plan_samples(ctx, self.options, token_ids, input_ids, labels, self.propose(feats))
        boxes = [p.regions.boxes for p in plans if p.image is not None]
        return Arranged(*arrange_regions(ctx, plans, token_ids, visual, self.encode_regions(feats, boxes),
                                         self.options.tag_features))

    def decode_answer(self, text: str, info) -> str:
        return text if info is None else boxes_to_text(text, info.tolist())

    @classmethod
    def stages(cls, options) -> dict[str, Stage]:
        proposer = ("connector.proposer",)
        return {"det": Stage("det", trains=proposer, runner="det"),
                "align": Stage("align", trains=("connector", "embeddings:added"), frozen=proposer),
                "instruct": Stage("instruct", trains=("connector", "llm"), frozen=proposer)}

    # ---- the LLM's image tokens ---------------------------------------------------------------------
    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        return self.image(feats)                                         # [B, M, D_llm]

    def num_tokens(self) -> int:
        """Image tokens + the region list (index token + feature per region) + the user-box features."""
        return self.image.num_tokens() + 2 * self.options.max_regions + 3 * self.options.max_user_regions

    def num_region_tokens(self) -> int:
        return self.options.max_regions + self.options.max_user_regions

    # ---- regions ---------------------------------------------------------------------------------------
    def proposer_maps(self, feats: VisualFeatures) -> list[torch.Tensor]:
        return [feats.layer_map(i) for i in self.options.proposer_layers]           # each [B, C_l, H_l, W_l]

    def region_maps(self, feats: VisualFeatures) -> list[torch.Tensor]:
        return [feats.layer_map(i) for i in self.options.region_layers]

    @torch.no_grad()
    def propose(self, feats: VisualFeatures) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image: kept proposal boxes [K, 4] and scores [K], best first."""
        o = self.options
        out = self.proposer(self.proposer_maps(feats))
        return self.proposer.propose(out, o.score_threshold, o.nms_iou, o.max_regions)

    def encode_regions(self, feats: VisualFeatures, boxes: list[torch.Tensor]) -> torch.Tensor:
        """One token per box: boxes [R_b, 4] per image -> [sum R_b, D_llm]."""
        return self.region_encoder(self.region_maps(feats), boxes)
