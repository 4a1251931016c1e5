"""Dense box-attribute pretraining of a vision encoder built from scratch (the `vision` stage).

Real MLLMs start from a pretrained encoder (CLIP, SigLIP). Nothing can be downloaded here, and a
from-scratch encoder learns object shapes far too slowly through the LLM's loss alone: on ShapesWorld, after
1,100 instruct steps a 2-layer LLM still answered shape questions at chance, while the same encoder learns
per-patch shapes in a few hundred steps of direct supervision. This stage stands in for that pretraining:
every patch predicts the attributes (e.g. shape, colour) of the object whose box contains the patch centre,
or "background". A joint attribute ``color+shape`` predicts the combination as one label (24 classes on
ShapesWorld), so each object's features also carry a code of the conjunction, not only of each part. The box
attributes ``x1``, ``y1``, ``x2``, ``y2`` (``cx``, ``cy`` for the centre) are where the patch's object lies: one
edge of its normalised box, quantised into ``box_bins`` classes, so the features say where things are (as a
CLIP ViT's do) and not only what they are. It writes a Hugging Face vision-model directory that
``--model.vision.name_or_path`` loads like any downloaded checkpoint.

Annotations: a JSON list of ``{"image": "rel/path.png", "split": "train", "objects": [{"box": [x1, y1,
x2, y2], "<attribute>": "<value>", ...}]}`` with normalised corner boxes — ShapesWorld's ``scenes.json``.
"""
from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..config import VisionConfig, opt
from ..data.images import load_image
from ..errors import UserError
from ..models.vision import VisionTower

BACKGROUND = "<background>"
BOX_ATTRIBUTES = {"x1": lambda b: b[0], "y1": lambda b: b[1], "x2": lambda b: b[2], "y2": lambda b: b[3],
                  "cx": lambda b: (b[0] + b[2]) / 2, "cy": lambda b: (b[1] + b[3]) / 2}


@dataclass
class VisionPretrainConfig:
    annotations: str = opt("", "scenes JSON with boxes and attributes (e.g. DATA/scenes.json)")
    out: str = opt("", "output dir: a Hugging Face vision model + preprocessor_config.json")
    attributes: list[str] = opt(["shape", "color"], "object attributes each patch learns to predict; 'a+b' = the "
                                                    "joint label of attributes a and b (e.g. color+shape); x1, y1, "
                                                    "x2, y2, cx, cy = a coordinate of the object's box")
    box_bins: int = opt(16, "classes of a box-coordinate attribute (the unit interval in equal bins)")
    attribute_weights: dict = opt({}, "loss weight per attribute, e.g. '{\"glyph\": 4}' (default 1): a rare or hard "
                                      "attribute (a glyph on some large objects) is otherwise crowded out by the rest")
    deterministic: bool = opt(True, "the same seed gives the same weights on the CPU (oneDNN convolutions off: "
                                    "slower on a CPU with many cores)")
    split: str = opt("train", "annotation split to train on ('val' is used for the held-out accuracy)")
    steps: int = opt(400, "optimizer steps")
    batch_size: int = opt(32, "images per step")
    lr: float = opt(2e-3, "AdamW learning rate")
    seed: int = opt(0, "seed")
    vision: VisionConfig = field(default_factory=VisionConfig)


def attribute_value(obj: dict, attribute: str, box_bins: int = 16) -> str:
    """The object's label for `attribute`; a joint attribute 'a+b' gives 'value_a+value_b'; a box attribute the
    bin of that coordinate (e.g. 'x1' of a box starting at 0.3 with 16 bins: '4')."""
    return "+".join(str(min(int(BOX_ATTRIBUTES[part](obj["box"]) * box_bins), box_bins - 1))
                    if part in BOX_ATTRIBUTES else str(obj[part]) for part in attribute.split("+"))


def attribute_parts(attributes: list[str]) -> list[str]:
    """The object fields the attributes read (a box coordinate reads 'box')."""
    return ["box" if part in BOX_ATTRIBUTES else part for a in attributes for part in a.split("+")]


def centres_inside(box: list[float], grid: tuple[int, int]) -> torch.Tensor:
    """[rows, cols] bool: which patch centres lie in the normalised box [x1, y1, x2, y2]."""
    rows, cols = grid
    cy = (torch.arange(rows) + 0.5) / rows
    cx = (torch.arange(cols) + 0.5) / cols
    x1, y1, x2, y2 = box
    return ((cy >= y1) & (cy <= y2))[:, None] & ((cx >= x1) & (cx <= x2))[None, :]


def object_patches(objects: list[dict], grid: tuple[int, int]) -> torch.Tensor:
    """[rows*cols] bool: patches whose centre lies in some object's box."""
    mask = torch.zeros(grid, dtype=torch.bool)
    for obj in objects:
        mask |= centres_inside(obj["box"], grid)
    return mask.flatten()


def patch_labels(objects: list[dict], grid: tuple[int, int], attribute: str, vocab: dict[str, int],
                 box_bins: int = 16) -> torch.Tensor:
    """[rows*cols] class ids: the attribute of the smallest box containing each patch centre (0 = background)."""
    labels = torch.zeros(grid, dtype=torch.long)
    for obj in sorted(objects, key=lambda o: -(o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1])):
        labels[centres_inside(obj["box"], grid)] = vocab[attribute_value(obj, attribute, box_bins)]  # smaller last wins
    return labels.flatten()


class DenseAttributeHead(nn.Module):
    def __init__(self, dim: int, vocabs: dict[str, dict[str, int]]):
        super().__init__()
        self.heads = nn.ModuleDict({a: nn.Linear(dim, len(v)) for a, v in vocabs.items()})

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {a: head(features) for a, head in self.heads.items()}   # each [B, N, classes]


def load_annotations(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read annotations: {e}") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of scenes")
    return data


def pretrain_vision(cfg: VisionPretrainConfig) -> Path:
    """Train the encoder and its per-patch heads; write the encoder to ``cfg.out``. With ``deterministic`` the
    same seed gives the same weights on the CPU (oneDNN's multi-threaded convolution backward pass sums in a
    varying order, so it is switched off for the run)."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled and not cfg.deterministic
    try:
        return _pretrain_vision(cfg)
    finally:
        torch.backends.mkldnn.enabled = enabled


def _pretrain_vision(cfg: VisionPretrainConfig) -> Path:
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    ann_path = Path(cfg.annotations)
    scenes = load_annotations(ann_path)
    unknown = sorted(set(cfg.attribute_weights) - set(cfg.attributes))
    if unknown:
        raise UserError(f"attribute_weights names {unknown}, which are not among the attributes {cfg.attributes}")
    for i, s in enumerate(scenes):
        for obj in s.get("objects", []):
            missing = [a for a in attribute_parts(cfg.attributes) if a not in obj]
            if missing or "box" not in obj:
                raise UserError(f"{ann_path}: scene #{i} ({s.get('image')}): object lacks {missing or ['box']}")
    vocabs = {a: {BACKGROUND: 0, **{v: i + 1 for i, v in enumerate(sorted({attribute_value(o, a, cfg.box_bins)
                                                                            for s in scenes for o in s["objects"]}))}}
              for a in cfg.attributes}
    tower = VisionTower(cfg.vision)
    transform = tower.image_transform()
    folder = ann_path.parent

    def tensors(split: str):
        chosen = [s for s in scenes if s.get("split", "train") == split]
        if not chosen:
            return None
        pixels = torch.stack([transform(load_image(folder / s["image"], where=str(ann_path))[0]) for s in chosen])
        labels = {a: torch.stack([patch_labels(s["objects"], tower.grid, a, vocabs[a], cfg.box_bins) for s in chosen])
                  for a in cfg.attributes}
        return pixels, labels

    train = tensors(cfg.split)
    if train is None:
        raise UserError(f"{ann_path}: no scenes with split {cfg.split!r}")
    # channels-last convolutions: faster on CPU (oneDNN; docs/notes/speed.md); weights go back to contiguous to save
    tower.model.to(memory_format=torch.channels_last)
    held_out = tensors("val")
    head = DenseAttributeHead(tower.out_dim, vocabs)
    params = list(tower.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    tower.train()
    bar = tqdm(range(cfg.steps), desc="pretrain[vision]", file=sys.stderr, mininterval=1.0)
    for _ in bar:
        idx = torch.randint(0, len(train[0]), (cfg.batch_size,))
        pixels = train[0][idx].contiguous(memory_format=torch.channels_last)
        logits = head(tower(pixels).features)                              # each [B, N, classes]
        loss = sum(cfg.attribute_weights.get(a, 1.0)
                   * F.cross_entropy(logits[a].flatten(0, 1), train[1][a][idx].flatten()) for a in cfg.attributes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    metrics = evaluate(tower, head, held_out, cfg.attributes) if held_out else {}
    tower.model.to(memory_format=torch.contiguous_format)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tower.model.config.image_size = tower.image_size                      # conv configs have none
    tower.model.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": tower.image_mean, "image_std": tower.image_std, "size": tower.image_size}, indent=1))
    (out / "vision_pretrain.json").write_text(json.dumps(
        {"config": asdict(cfg), "vocabularies": vocabs, "held_out_patch_accuracy": metrics}, indent=1))
    return out


@torch.no_grad()
def evaluate(tower, head, data, attributes) -> dict[str, float]:
    """Accuracy on held-out object patches (background excluded), per attribute."""
    tower.eval()
    pixels, labels = data
    logits = head(torch.cat([tower(pixels[i:i + 64]).features for i in range(0, len(pixels), 64)]))
    tower.train()
    return {a: float((logits[a].argmax(-1) == labels[a])[labels[a] > 0].float().mean()) for a in attributes}
