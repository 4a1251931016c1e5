"""Train LION's stand-in for RAM: a multi-label tagger on a frozen encoder over ShapesWorld's vocabulary.

Reads ``DATA/scenes.json`` (each scene's objects: colour, shape, size, glyph) and the images it names; encodes
every image once with the frozen encoder; trains ``lion.tagger.ImageTagger`` with a binary cross-entropy per tag
on the train split; reports per-tag precision and recall on the val split at the threshold. Writes the tagger
directory (``config.json``, ``model.safetensors``, ``metrics.json``, ``vision/``: a copy of the encoder).
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_model
from tqdm import tqdm

from ...config import VisionConfig, opt
from ...data.images import load_image
from ...errors import UserError
from ...lion.tagger import ImageTagger, scene_tags, shapes_vocabulary
from ...models.vision import VisionTower


@dataclass
class TaggerConfig:
    data: str = opt("", "ShapesWorld dir with scenes.json and images/ (`vlbridge data shapes`)")
    vision: str = opt("", "the frozen vision encoder dir (e.g. the output of `vlbridge pretrain-vision`)")
    out: str = opt("runs/tagger", "tagger directory to write")
    steps: int = opt(300, "optimizer steps")
    batch_size: int = opt(64, "images per step")
    lr: float = opt(3e-3, "AdamW learning rate")
    hidden: int = opt(128, "tagger MLP width")
    threshold: float = opt(0.5, "tag score threshold (RAM: 0.85)")
    seed: int = opt(0, "seed")


def load_scenes(data: Path) -> list[dict]:
    path = data / "scenes.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the tagger trains on a ShapesWorld dir "
                                "(`vlbridge data shapes --out DIR`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


@torch.no_grad()
def encode_split(tower: VisionTower, scenes: list[dict], data: Path, batch: int = 64) -> torch.Tensor:
    """Frozen patch features of the scenes' images [n, N, D]."""
    transform = tower.image_transform()
    out = []
    for i in range(0, len(scenes), batch):
        pixels = torch.stack([transform(load_image(data / s["image"], where=str(data / "scenes.json"))[0])
                              for s in scenes[i:i + batch]])
        out.append(tower(pixels).features)
    return torch.cat(out) if out else torch.zeros(0)


def targets(scenes: list[dict], vocabulary: list[str]) -> torch.Tensor:
    """[n, n_tags] 0/1: which vocabulary tags each scene has."""
    return torch.tensor([[float(t in scene_tags(s)) for t in vocabulary] for s in scenes])


def tag_metrics(tagger: ImageTagger, features: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per-tag precision / recall / support on ``features`` at the tagger's threshold, and their means."""
    with torch.no_grad():
        predicted = (tagger(features).sigmoid() > tagger.threshold).float()            # [n, n_tags]
    per_tag = {}
    for j, tag in enumerate(tagger.tags):
        tp = float((predicted[:, j] * truth[:, j]).sum())
        pred, true = float(predicted[:, j].sum()), float(truth[:, j].sum())
        per_tag[tag] = {"precision": tp / pred if pred else None, "recall": tp / true if true else None,
                        "support": int(true)}
    def mean(key):
        values = [v[key] for v in per_tag.values() if v[key] is not None]
        return sum(values) / len(values) if values else None
    exact = float((predicted == truth).all(1).float().mean()) if len(truth) else None
    return {"per_tag": per_tag, "mean_precision": mean("precision"), "mean_recall": mean("recall"),
            "exact_set": exact, "threshold": tagger.threshold, "n": len(truth)}


def train_tagger(cfg: TaggerConfig) -> Path:
    data, out = Path(cfg.data), Path(cfg.out)
    if not cfg.vision or not Path(cfg.vision).is_dir():
        raise FileNotFoundError(f"--vision {cfg.vision!r} is not a vision encoder directory (make one with "
                                "`vlbridge pretrain-vision`)")
    scenes = load_scenes(data)
    train = [s for s in scenes if s.get("split", "train") == "train"]
    val = [s for s in scenes if s.get("split") == "val"]
    if not train:
        raise UserError(f"{data / 'scenes.json'} has no train-split scenes")
    torch.manual_seed(cfg.seed)
    tower = VisionTower(VisionConfig(name_or_path=cfg.vision)).eval()
    tower.requires_grad_(False)
    vocabulary = shapes_vocabulary()
    x_train, y_train = encode_split(tower, train, data), targets(train, vocabulary)
    tagger = ImageTagger(tower.out_dim, vocabulary, cfg.hidden, cfg.threshold)
    optimizer = torch.optim.AdamW(tagger.parameters(), lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="lion[tagger]", file=sys.stderr, mininterval=1.0)
    for _ in bar:
        idx = torch.randint(0, len(x_train), (cfg.batch_size,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(tagger(x_train[idx]), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    tagger.eval()
    metrics = {"val": tag_metrics(tagger, encode_split(tower, val, data), targets(val, vocabulary)) if val else None,
               "train": tag_metrics(tagger, x_train, y_train), "config": asdict(cfg)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(tagger.config(), indent=1) + "\n")
    save_model(tagger, str(out / "model.safetensors"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if (out / "vision").exists():
        shutil.rmtree(out / "vision")
    shutil.copytree(cfg.vision, out / "vision")
    return out


def metrics_table(metrics: dict) -> str:
    """Per-tag precision/recall of a split as a Markdown table."""
    rows = ["| tag | precision | recall | support |", "|---|---:|---:|---:|"]
    fmt = lambda v: "–" if v is None else f"{100 * v:.1f}"
    for tag, m in metrics["per_tag"].items():
        rows.append(f"| {tag} | {fmt(m['precision'])} | {fmt(m['recall'])} | {m['support']} |")
    rows.append(f"| **mean** | {fmt(metrics['mean_precision'])} | {fmt(metrics['mean_recall'])} | {metrics['n']} images |")
    return "\n".join(rows)
