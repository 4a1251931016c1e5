"""A small multi-label image tagger on a frozen vision encoder: LION's RAM, at ShapesWorld's scale.

``ImageTagger`` reads the encoder's patch features ``[B, N, D]``: LayerNorm, then mean- and max-pooling over
the patches (a small object's colour survives the max), then an MLP -> one logit per tag. A tag is predicted
when its sigmoid exceeds ``threshold``. The vocabulary of ShapesWorld is its colours, shapes, sizes and
``glyph`` (an object carries a glyph). ``scene_tags`` gives an annotated scene's true tags.

A tagger directory holds ``config.json`` (tags, threshold, widths), ``model.safetensors`` (the head),
``metrics.json`` and ``vision/`` (a copy of the frozen encoder it was trained on).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model
from torch import nn

from ..data.shapesworld.constants import COLORS, SHAPES, SIZES

GLYPH_TAG = "glyph"


def shapes_vocabulary() -> list[str]:
    """ShapesWorld's tags: colours, shapes, sizes, then 'glyph'."""
    return list(COLORS) + list(SHAPES) + list(SIZES) + [GLYPH_TAG]


def scene_tags(scene: dict) -> set[str]:
    """The true tags of an annotated scene (``scenes.json`` entry)."""
    tags = set()
    for obj in scene.get("objects", []):
        tags |= {str(obj[k]) for k in ("color", "shape", "size") if obj.get(k)}
        if obj.get("glyph"):
            tags.add(GLYPH_TAG)
    return tags


class ImageTagger(nn.Module):
    def __init__(self, vis_dim: int, tags: list[str], hidden: int = 128, threshold: float = 0.5):
        super().__init__()
        self.tags, self.threshold, self.hidden = list(tags), float(threshold), hidden
        self.norm = nn.LayerNorm(vis_dim)
        self.head = nn.Sequential(nn.Linear(2 * vis_dim, hidden), nn.GELU(), nn.Linear(hidden, len(tags)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.norm(features)                                          # [B, N, D]
        pooled = torch.cat([x.mean(1), x.amax(1)], -1)                   # [B, 2D]
        return self.head(pooled)                                         # [B, n_tags] logits

    def predict(self, features: torch.Tensor, threshold: float | None = None) -> list[list[str]]:
        """The tags above ``threshold`` (default: the tagger's) per image, in vocabulary order."""
        scores = self(features).sigmoid()
        cut = self.threshold if threshold is None else threshold
        return [[t for t, s in zip(self.tags, row) if s > cut] for row in scores.tolist()]

    def config(self) -> dict:
        return {"tags": self.tags, "threshold": self.threshold, "hidden": self.hidden,
                "vis_dim": self.norm.normalized_shape[0]}

    @classmethod
    def load(cls, path: str | Path) -> "ImageTagger":
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path} is not a tagger directory (no config.json); train one with "
                                    "`vlbridge lion tagger`")
        cfg = json.loads(cfg_file.read_text())
        tagger = cls(cfg["vis_dim"], cfg["tags"], cfg["hidden"], cfg["threshold"])
        load_model(tagger, str(path / "model.safetensors"))
        return tagger.eval()
