"""`lion`: JiuTian-LION's dual-level visual knowledge — two branches into the LLM and a mixture of adapters in it.

- Branch A (image level): an instruction-aware Q-Former (the `qformer` connector: its queries also read the
  instruction text) on the feature layer -> ``num_queries`` tokens.
- Branch B (region level): the Vision Aggregator (``lion.aggregator``): the feature layer's patch tokens as the
  query stream, its layer 1 cross-attending to the deeper of ``key_layers``, layer 2 to the shallower -> then
  LayerNorm + MLP -> one token per patch. Its last Linear starts at zero (``region_zero_init``), so until branch B
  trains its tokens are zero vectors.
- The LLM sees A's tokens, then B's (``branches`` keeps one alone, for ablations).
- Mixture of adapters (``lion.moa``): ``adapters`` parallel adapters beside every FFN sublayer of the LLM
  (``wrap_llm``), gated per channel by each sample's task type, which comes from its record's ``task`` through
  ``task_types`` (``task_types()`` / ``routing()`` hooks). ``adapters`` 2 = LION's router, 1 = one shared adapter,
  0 = none.
- ``soft_prompt`` adds the ``<soft>`` token whose embedding row the tag sentence uses (``lion.tags``).

Stages (``stages``): ``image`` (LION stage 1: branch A + the image adapter on image-level tasks), ``region``
(stage 2: branch B + the region adapter on region-level tasks), ``mixed`` (stage 3: both branches, every adapter
and the router on all data), ``joint`` (everything of the three at once, on all data), and the common
``align`` / ``instruct``. The LLM's own weights stay frozen in LION's stages (LION freezes its FlanT5) unless
named in ``llm_stages`` (a from-scratch LLM must learn language somewhere); the ``<soft>`` row trains in each.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import STAGES, Stage, opt
from ..lion.aggregator import VisionAggregator
from ..lion.moa import ADAPTERS, ROUTER, TaskRouter, install_moa
from ..lion.tags import SOFT_TOKEN
from .base import Connector, ConnectorOutput, VisualFeatures
from .qformer import QFormerConnector, QFormerOptions

TYPES = ("image", "region")
IMAGE_TASKS = ("caption", "color", "shape", "count", "exist", "spatial", "glyph", "inventory", "inventory_color",
               "mixed")
REGION_TASKS = ("rec", "reg", "gcap", "rec_neg")
BRANCHES = ("both", "image", "region")
LION_STAGES = ("image", "region", "mixed", "joint")
# LION reads blocks 29 and 19 of the 39 EVA-CLIP blocks it uses (hidden states 29 and 19 of 0..39)
KEY_DEPTHS = (29 / 39, 19 / 39)


@dataclass
class LionOptions:
    branches: str = opt("both", "which branches feed the LLM: 'both' (A's tokens, then B's), 'image' (A alone) or "
                                "'region' (B alone)")
    qformer: dict = opt({}, "options of branch A's Q-Former (the `qformer` connector's; instruction_aware defaults "
                            "to true; LION: BLIP-2 sizes, 32 queries)")
    key_layers: list[int] | None = opt(None, "encoder hidden states the aggregator's layers cross-attend to, deeper "
                                             "first; None = those at 29/39 and 19/39 of the encoder's depth (LION's "
                                             "blocks 29 and 19 of 39), made distinct")
    aggregator_heads: int = opt(16, "aggregator attention heads (LION: 16)")
    aggregator_intermediate: int | None = opt(None, "aggregator FFN width; None = 4 x the encoder width (BERT)")
    key_grid: str = opt("query", "key maps on another grid than the feature layer's (a conv net's earlier stages): "
                                 "'query' resamples them to the feature grid by area averaging, 'native' attends to "
                                 "them at their own resolution")
    position_codes: bool = opt(False, "add fixed 2-D sine-cosine codes of each cell's image position to the "
                                      "aggregator's queries and keys (conv maps carry no position; ViT tokens do)")
    region_hidden: int | None = opt(None, "hidden width of branch B's MLP; None = 4 x the encoder width (LION)")
    region_zero_init: bool = opt(True, "branch B's last Linear starts at zero (its tokens are zero until it trains)")
    adapters: int = opt(2, "adapters beside each LLM FFN: 2 = one per task type with the router (LION), 1 = one "
                           "shared adapter, 0 = none")
    adapter_bottleneck: int = opt(64, "adapter bottleneck width (LION: 64)")
    task_types: dict = opt({**{t: "image" for t in IMAGE_TASKS}, **{t: "region" for t in REGION_TASKS}},
                           "record task -> task type ('image' or 'region'): routes each sample and picks the "
                           "image/region stages' data")
    default_task_type: str = opt("image", "task type of a task not in task_types (and of chat without --task-type)")
    soft_prompt: bool = opt(True, "add the <soft> token of the soft-prompted tag sentence (one learned row)")
    llm_stages: list[str] = opt([], "LION stages in which the LLM's own weights train too (LION: none; a from-"
                                    "scratch LLM needs at least the first)")


class LionConnector(Connector):
    Options = LionOptions

    def __init__(self, options: LionOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        o = options
        if o.branches not in BRANCHES:
            raise ValueError(f"lion connector: branches must be one of {BRANCHES}, got {o.branches!r}")
        bad = {t: v for t, v in o.task_types.items() if v not in TYPES}
        if bad or o.default_task_type not in TYPES:
            raise ValueError(f"lion connector: task types must be among {TYPES}; got {bad or o.default_task_type!r}")
        unknown = sorted(set(o.llm_stages) - set(LION_STAGES))
        if unknown:
            raise ValueError(f"lion connector: llm_stages {unknown} are not LION stages {LION_STAGES}")
        if o.adapters < 0 or o.adapter_bottleneck < 1:
            raise ValueError("lion connector: adapters must be >= 0 and adapter_bottleneck >= 1")
        self.task_router = TaskRouter(TYPES, o.default_task_type)
        self.qformer = None
        if o.branches in ("both", "image"):
            qopts = QFormerOptions(**{"instruction_aware": True, **o.qformer})
            self.qformer = QFormerConnector(qopts, vis_dim, llm_dim, grid)
            self.wants_text = qopts.instruction_aware
        self.n_query_tokens = grid[0] * grid[1]
        self.key_layer_ids: list[int] = list(o.key_layers or [-2, -3])
        self._build_region_branch([vis_dim] * len(self.key_layer_ids))

    def _build_region_branch(self, key_widths: list[int]) -> None:
        o, width = self.options, self.vis_dim
        self.aggregator = self.region_proj = None
        if o.branches == "image":
            return
        self.aggregator = VisionAggregator(width, key_widths, o.aggregator_heads, o.aggregator_intermediate or 4 * width,
                                           o.key_grid, o.position_codes)
        hidden = o.region_hidden or 4 * width
        self.region_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(),
                                         nn.Linear(hidden, self.llm_dim))
        if o.region_zero_init:
            with torch.no_grad():
                self.region_proj[-1].weight.zero_()
                self.region_proj[-1].bias.zero_()

    # ---- hooks ---------------------------------------------------------------------------------------------
    def bind_vision(self, tower) -> None:
        """Resolve the key layers against the encoder's depth, read their widths, and rebuild branch B."""
        shapes = tower.hidden_shapes()
        n = len(shapes)
        if self.options.key_layers is None:
            blocks = n - 1
            picked: list[int] = []
            for depth in KEY_DEPTHS:
                i = min(max(round(blocks * depth), 0), n - 2)        # an intermediate layer, not the last
                while i in picked and i > 0:
                    i -= 1
                picked.append(i)
            self.key_layer_ids = picked
        bad = [i for i in self.key_layer_ids if not -n <= i < n]
        if bad:
            raise ValueError(f"lion connector: key_layers {bad} do not exist; the encoder gives {n} hidden states "
                             f"(indices {-n}..{n - 1})")
        widths = [shapes[i][0] if len(shapes[i]) == 3 else shapes[i][-1] for i in self.key_layer_ids]
        first = shapes[tower.cfg.feature_layers[0]]
        prefix = first[0] - self.grid[0] * self.grid[1] if len(first) == 2 else 0
        self.n_query_tokens = self.grid[0] * self.grid[1] + (prefix if tower.cfg.keep_cls else 0)
        self._build_region_branch(widths)

    def encoder_layers(self) -> list[int]:
        return list(self.key_layer_ids) if self.aggregator is not None else []

    def added_tokens(self) -> list[str]:
        return [SOFT_TOKEN] if self.options.soft_prompt else []

    def wrap_llm(self, llm: nn.Module) -> None:
        if self.options.adapters:
            install_moa(llm, self.options.adapters, self.options.adapter_bottleneck, self.task_router)

    def task_types(self, tasks) -> list[str] | None:
        if not self.options.adapters:
            return None
        return [self.options.task_types.get(t, self.options.default_task_type) for t in tasks]

    def routing(self, types):
        return self.task_router.routing(types)

    @classmethod
    def stages(cls, options) -> dict[str, Stage]:
        o = options if isinstance(options, LionOptions) else LionOptions(**options)
        k = max(o.adapters, 1)

        def adapter(task_type: str) -> str:                  # the adapter a type's one-hot gate opens
            return f"llm.*.{ADAPTERS}.{min(TYPES.index(task_type), k - 1)}"

        def tasks(task_type: str) -> tuple[str, ...]:
            return tuple(t for t, v in o.task_types.items() if v == task_type)

        def lion_stage(name: str, trains: tuple[str, ...], data: tuple[str, ...] | None) -> Stage:
            extra = (("embeddings:added",) if o.soft_prompt else ()) + (("llm",) if name in o.llm_stages else ())
            return Stage(name, trains=trains + extra, tasks=data)

        every_adapter, router = f"llm.*.{ADAPTERS}", f"llm.*.{ROUTER}"
        return {
            **STAGES,
            "instruct": Stage("instruct", trains=("connector", "llm", every_adapter, router)),   # LoRA: adapters too
            "image": lion_stage("image", ("connector.qformer", adapter("image")), tasks("image")),
            "region": lion_stage("region", ("connector.aggregator", "connector.region_proj", adapter("region")),
                                 tasks("region")),
            "mixed": lion_stage("mixed", ("connector", every_adapter, router), None),
            "joint": lion_stage("joint", ("connector", every_adapter, router), None),
        }

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        parts = []
        if self.qformer is not None:
            parts.append(self.qformer(feats).tokens)                               # [B, Q, D_llm]
        if self.aggregator is not None:
            keys = [feats.layer_map(i) for i in self.key_layer_ids]                # each [B, C_i, H_i, W_i]
            h = self.aggregator(feats.features, keys, self.grid)                   # [B, N, D_vis]
            parts.append(self.region_proj(h))                                      # [B, N, D_llm]
        return ConnectorOutput(tokens=torch.cat(parts, 1))                         # [B, Q + N, D_llm]

    def num_tokens(self) -> int:
        a = self.qformer.num_tokens() if self.qformer is not None else 0
        return a + (self.n_query_tokens if self.aggregator is not None else 0)

    def flops(self, batch: int = 1, text_len: int = 0) -> int:
        """Branch A's Q-Former (``text_len`` instruction tokens) + branch B: 2 x MACs of the aggregator's
        projections, attention scores/values and FFNs, and of the MLP (norms ignored)."""
        total = self.qformer.flops(batch, text_len) if self.qformer is not None else 0
        if self.aggregator is not None:
            n, d = self.n_query_tokens, self.vis_dim
            macs = 0
            for layer in self.aggregator.layers:
                kw = layer.cross_attn.kdim
                nk = self.grid[0] * self.grid[1]
                f = layer.ffn.up.out_features
                macs += n * 4 * d * d + 2 * n * n * d                              # self-attention
                macs += n * 2 * d * d + nk * 2 * kw * d + 2 * n * nk * d           # cross-attention
                macs += n * 2 * d * f                                              # FFN
            hidden = self.region_proj[1].out_features
            macs += n * (d * hidden + hidden * self.llm_dim)
            total += 2 * batch * macs
        return total
