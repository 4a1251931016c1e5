"""Scores split by what the question needs to see: small vs large objects, few vs many objects, seen vs unseen
colour-shape pairs.

ShapesWorld's scene annotations (``scenes.json``) say the size of every object and how many a scene holds,
so the per-item scores of an eval (``predictions.jsonl``) can be regrouped:

- ``small`` / ``large``: questions about one object (colour, shape, exist-yes, REC, REG) by that object's
  size class. On the arena-cpu data a small object is smaller than one encoder patch, so a connector that
  pools neighbouring patches away loses it, while a large one survives pooling.
- ``many`` / ``few``: counting questions on scenes with >= MANY objects or fewer.
- ``unseen``: questions about one object whose colour-shape pair was held out of training
  (``ShapesWorldConfig.exclude_pairs``): on the shifted test set, how well the attributes compose.

Each value is the mean of the items' own scores (their share of the task's headline metric).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..data.shapesworld import COLORS, SHAPES

MANY = 4
GROUPS = ("small", "large", "many", "few", "unseen")
_C, _S = "|".join(COLORS), "|".join(SHAPES)
ABOUT_ONE_OBJECT = {                     # task -> question pattern naming the object (color?, shape?)
    "color": re.compile(rf"What color is the (?P<shape>{_S})\?"),
    "shape": re.compile(rf"What shape is the (?P<color>{_C}) object\?"),
    "exist": re.compile(rf"Is there an? (?P<color>{_C}) (?P<shape>{_S}) in the image\?"),
    "glyph": re.compile(rf"What is written on the (?P<color>{_C}) (?P<shape>{_S})\?"),
    "rec": re.compile(rf"Give the bounding box of the (?P<color>{_C}) (?P<shape>{_S})\."),
}
REG_OBJECT = re.compile(rf"\b(?P<size>small|large) (?P<color>{_C}) (?P<shape>{_S})\b")


def load_scenes(data: Path) -> dict[str, list[dict]] | None:
    """image path (as in the records) -> its objects, or None when the data has no scenes.json."""
    path = data / "scenes.json"
    if not path.is_file():
        return None
    return {s["image"]: s["objects"] for s in json.loads(path.read_text())}


def question_object(task: str, prompt: str, reference: str, objects: list[dict]) -> dict | None:
    """The one object a question is about (None if it is not about one present object, e.g. exist-no)."""
    if task == "reg":
        m = REG_OBJECT.search(reference)
    else:
        pattern = ABOUT_ONE_OBJECT.get(task)
        m = pattern.search(prompt) if pattern else None
    if m is None or (task == "exist" and reference.strip().lower() != "yes"):
        return None
    wanted = {k: v for k, v in m.groupdict().items() if k in ("color", "shape")}
    found = [o for o in objects if all(o[k] == v for k, v in wanted.items())]
    return found[0] if len(found) == 1 else None


def object_size(task: str, prompt: str, reference: str, objects: list[dict]) -> str | None:
    """'small'/'large' for a question about one object (None if it is not, e.g. an exist-no question)."""
    obj = question_object(task, prompt, reference, objects)
    return None if obj is None else obj["size"]


def group_scores(predictions: Path, test_file: Path, scenes: dict[str, list[dict]],
                 held_out: tuple[str, ...] | list[str] = ()) -> dict[str, dict]:
    """{group: {"score": mean item score, "n": items}} for the groups that have items; ``held_out``: the
    colour-shape pairs ('red circle') training never showed."""
    image_of = {r["id"]: r.get("image") for r in json.loads(test_file.read_text())}
    buckets: dict[str, list[float]] = {g: [] for g in GROUPS}
    unseen = set(held_out)
    for line in predictions.read_text().splitlines():
        p = json.loads(line)
        objects = scenes.get(image_of.get(p["id"]) or "")
        if objects is None or p.get("score") is None:
            continue
        if p["task"] == "count":
            buckets["many" if len(objects) >= MANY else "few"].append(float(p["score"]))
        obj = question_object(p["task"], p["prompt"], p["reference"], objects)
        if obj is None:
            continue
        if p["task"] != "glyph":                    # glyphs sit only on large objects
            buckets[obj["size"]].append(float(p["score"]))
        if f"{obj['color']} {obj['shape']}" in unseen:
            buckets["unseen"].append(float(p["score"]))
    return {g: {"score": sum(v) / len(v), "n": len(v)} for g, v in buckets.items() if v}
