"""The vision encoder: any Hugging Face vision model, by name/path or built from a config.

``VisionTower`` runs the encoder once with hidden states, picks ``feature_layers`` (concatenated on the
channel axis), drops or keeps the CLS/prefix tokens, also keeps every other layer a connector asked for
(``request_layers``: e.g. a region encoder's higher-resolution map, an aggregator's intermediate layers), and
returns ``VisualFeatures`` with the patch grid. Works for CLIP and SigLIP vision towers, DINOv2, conv nets
(ResNet maps) and any model whose ``AutoModel`` returns ``hidden_states``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel

from ..config import VisionConfig
from ..connectors.base import VisualFeatures
from ..data.image_transform import ImageTransform
from ..errors import UserError
from .feature_cache import FeatureCache

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_vision_model(cfg: VisionConfig) -> nn.Module:
    if cfg.name_or_path:
        full = AutoConfig.from_pretrained(cfg.name_or_path)
        sub = getattr(full, "vision_config", None)
        if sub is not None:   # a full CLIP/SigLIP checkpoint: load just its vision tower class
            return MODEL_MAPPING[type(sub)].from_pretrained(cfg.name_or_path)
        return AutoModel.from_pretrained(cfg.name_or_path)
    if "model_type" not in cfg.arch:
        raise UserError("vision.arch needs a model_type (e.g. 'clip_vision_model') when name_or_path is None")
    arch = dict(cfg.arch)
    hf_config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    return AutoModel.from_config(hf_config)


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig, model: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = model if model is not None else build_vision_model(cfg)
        hf = self.model.config
        self.patch_size = getattr(hf, "patch_size", None)        # token models; conv models give maps
        size = getattr(hf, "image_size", 224)
        self.image_size = cfg.image_size or (size if isinstance(size, int) else size[0])
        self.image_mean, self.image_std = self._normalisation()
        self.cache: FeatureCache | None = None                   # attached by the trainer while frozen
        self.extra_layers: tuple[int, ...] = ()                  # hidden states kept besides feature_layers
        self._hidden_shapes: list[tuple[int, ...]] | None = None
        with torch.no_grad(), torch.random.fork_rng():           # one dry run tells width and grid for any model
            probe = self(torch.zeros(1, 3, self.image_size, self.image_size))
        self.out_dim, self.grid = probe.features.shape[-1], probe.grid

    def _normalisation(self) -> tuple[list[float], list[float]]:
        """cfg values, else the checkpoint's preprocessor_config.json, else CLIP's."""
        mean, std = self.cfg.image_mean, self.cfg.image_std
        if (mean is None or std is None) and self.cfg.name_or_path:
            pre = Path(self.cfg.name_or_path) / "preprocessor_config.json"
            if pre.is_file():
                meta = json.loads(pre.read_text())
                mean, std = mean or meta.get("image_mean"), std or meta.get("image_std")
        return list(mean or CLIP_MEAN), list(std or CLIP_STD)

    def image_transform(self) -> ImageTransform:
        return ImageTransform(self.image_size, self.image_mean, self.image_std)

    def resolved_arch(self) -> dict:
        """The full HF config as a dict, so a saved model rebuilds without the original checkpoint."""
        return self.model.config.to_dict()

    def _as_tokens(self, h: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """A hidden state as tokens [B, P + rows*cols, D] and its grid (conv maps [B, D, rows, cols] flattened)."""
        if h.dim() == 4:
            return h.flatten(2).transpose(1, 2), (h.shape[-2], h.shape[-1])
        return h, (image_hw[0] // self.patch_size, image_hw[1] // self.patch_size)

    def request_layers(self, layers) -> None:
        """Also return these hidden-state indices (``VisualFeatures.hidden``) from every forward pass."""
        n = len(self.hidden_shapes())
        bad = [i for i in layers if not -n <= i < n]
        if bad:
            raise ValueError(f"encoder layer(s) {bad} do not exist: the encoder gives {n} hidden states "
                             f"(indices {-n}..{n - 1})")
        self.extra_layers = tuple(dict.fromkeys(layers))
        if self.cache is not None:
            self.cache.clear()

    def hidden_shapes(self) -> list[tuple[int, ...]]:
        """The per-image shape of every hidden state, (P + N, D) for tokens or (C, H, W) for maps (a dry run)."""
        if self._hidden_shapes is None:
            with torch.no_grad(), torch.random.fork_rng():
                out = self.model(pixel_values=torch.zeros(1, 3, self.image_size, self.image_size),
                                 output_hidden_states=True)
            self._hidden_shapes = [tuple(h.shape[1:]) for h in out.hidden_states]
        return self._hidden_shapes

    def frozen(self) -> bool:
        """Eval mode with nothing to train: the output is a fixed function of the pixels."""
        return not self.training and not any(p.requires_grad for p in self.parameters())

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        if self.cache is not None and self.frozen():
            return self.cache.features(pixel_values, self.encode)
        return self.encode(pixel_values)

    def encode(self, pixel_values: torch.Tensor) -> VisualFeatures:
        # pixel_values [B, 3, H, W] -> selected hidden states, each [B, P + rows*cols, D]
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        picked = [self._as_tokens(out.hidden_states[i], pixel_values.shape[-2:]) for i in self.cfg.feature_layers]
        grids = {g for _, g in picked}
        if len(grids) > 1:
            raise ValueError(f"vision.feature_layers {self.cfg.feature_layers} have different grids {sorted(grids)}; "
                             "only layers of one resolution can be concatenated")
        hidden, (rows, cols) = [h for h, _ in picked], grids.pop()
        n_prefix = hidden[0].shape[1] - rows * cols
        patches = [h[:, n_prefix:] for h in hidden]                    # each [B, rows*cols, D]
        cls = torch.cat([h[:, :n_prefix] for h in hidden], -1) if n_prefix else None
        features = torch.cat(patches, -1)                              # [B, N, D * len(layers)]
        if self.cfg.keep_cls and cls is not None:
            features = torch.cat([cls, features], 1)                   # [B, P + N, D_vis]
        hidden = {i: out.hidden_states[i] for i in self.extra_layers}   # as the encoder gives them
        return VisualFeatures(features=features, grid=(rows, cols), layers=patches, cls=cls, hidden=hidden)
