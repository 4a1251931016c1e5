"""Write tagged copies of LLaVA-style record files: each record's image tagged by the tagger, the tag sentence
(``lion.tags``) put in front of the question of the turn that holds the image.

Tags come from the tagger (its frozen encoder, its threshold unless ``tags.threshold``); ``tags.noise``
replaces each with probability p by a tag the image does not have (its true tags from ``scenes.json`` when
the data has one, else the predicted ones). Records without images are copied unchanged. The output keeps
image paths as they are, so it is read with ``image_folder`` = the original data dir.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from ...config import VisionConfig
from ...data.images import load_image
from ...data.template import IMAGE_TOKEN
from ...errors import UserError
from ...lion.tagger import ImageTagger, scene_tags
from ...lion.tags import TagsConfig, noisy_tags, with_tags
from ...models.vision import VisionTower


class Tagging:
    """A loaded tagger with its encoder; ``tags(paths)`` -> predicted tags per image (cached by path)."""

    def __init__(self, tagger_dir: str | Path, threshold: float | None = None):
        self.tagger = ImageTagger.load(tagger_dir)
        self.tower = VisionTower(VisionConfig(name_or_path=str(Path(tagger_dir) / "vision"))).eval()
        self.transform = self.tower.image_transform()
        self.threshold = threshold
        self.cache: dict[str, list[str]] = {}

    @torch.no_grad()
    def tags(self, paths: list[Path], batch: int = 64) -> list[list[str]]:
        todo = sorted({str(p) for p in paths} - set(self.cache))
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            pixels = torch.stack([self.transform(load_image(p, where=p)[0]) for p in chunk])
            for p, tags in zip(chunk, self.tagger.predict(self.tower(pixels).features, self.threshold)):
                self.cache[p] = tags
        return [self.cache[str(p)] for p in paths]


def scene_truth(data: Path) -> dict[str, set[str]]:
    """image path (relative, as the records write it) -> true tags, from DATA/scenes.json if there is one."""
    path = data / "scenes.json"
    if not path.is_file():
        return {}
    return {s["image"]: scene_tags(s) for s in json.loads(path.read_text())}


def tag_file(src: Path, dst: Path, tagging: Tagging, cfg: TagsConfig, image_folder: Path) -> dict:
    """Tag every record of ``src`` into ``dst``; returns counts (records, tagged, tags replaced by noise)."""
    try:
        records = json.loads(src.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{src}: cannot read records ({e})") from None
    truth = scene_truth(image_folder)
    firsts = [first_image(r) for r in records]
    predicted = dict(zip([f for f in firsts if f], tagging.tags([image_folder / f for f in firsts if f])))
    stats = {"records": len(records), "tagged": 0, "tags": 0, "replaced": 0}
    vocabulary = tagging.tagger.tags
    for rec, image in zip(records, firsts):
        if not image or cfg.mode == "none":
            continue
        tags = predicted[image]
        rng = random.Random(f"{cfg.seed}-{rec.get('id')}")
        noisy = noisy_tags(tags, truth.get(image, set(tags)), vocabulary, cfg.noise, rng)
        stats["tags"] += len(tags)
        stats["replaced"] += sum(a != b for a, b in zip(tags, noisy))
        for turn in rec.get("conversations", []):
            if turn.get("from") in ("human", "user") and IMAGE_TOKEN in turn.get("value", ""):
                turn["value"] = with_tags(turn["value"], noisy, cfg.mode)
                stats["tagged"] += 1
                break
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(records, indent=1) + "\n")
    return stats


def first_image(record: dict) -> str | None:
    image = record.get("image")
    if isinstance(image, list):
        return image[0] if image else None
    return image


def tag_dataset(data: Path, out: Path, tagger_dir: Path, cfg: TagsConfig,
                files: tuple[str, ...] = ("train.json", "val.json", "test.json")) -> dict:
    """Tagged copies of DATA's record files into OUT (same names); returns per-file counts."""
    tagging = Tagging(tagger_dir, cfg.threshold)
    stats = {}
    for name in files:
        if (data / name).is_file():
            stats[name] = tag_file(data / name, out / name, tagging, cfg, data)
    (out / "tags.json").write_text(json.dumps({"config": vars(cfg), "tagger": str(tagger_dir), "data": str(data),
                                               "files": stats}, indent=1) + "\n")
    return stats
