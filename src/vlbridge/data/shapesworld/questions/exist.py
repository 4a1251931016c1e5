"""exist: "Is there a red circle in the image?" for every object (yes) and hard or absent negatives (no).

A balanced task: the writer picks "yes" or "no" candidates so that each split holds as many of both.
"""

from __future__ import annotations

import random

from ..scenes import Scene
from .common import QA, absent_pairs_by_kind, article


def _question(color: str, shape: str) -> str:
    return f"Is there {article(color)} {color} {shape} in the image?"


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    """All positives plus one negative of each available kind (hard colour/shape, absent)."""
    negatives: list[tuple[str, str]] = []
    for pool in absent_pairs_by_kind(scene):
        choices = [p for p in pool if p not in negatives]
        if choices:
            negatives.append(rng.choice(choices))
    qas = [(_question(o.color, o.shape), "yes") for o in scene.objects]
    return qas + [(_question(c, s), "no") for c, s in negatives]
