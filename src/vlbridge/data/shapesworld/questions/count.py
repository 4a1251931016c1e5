"""count: how many objects in all, how many of each present shape, and of one absent shape (answer 0)."""

from __future__ import annotations

import random

from ..constants import SHAPES
from ..scenes import Scene
from .common import QA


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    qas = [("How many objects are there?", str(len(scene.objects)))]
    present = [s for s in SHAPES if any(o.shape == s for o in scene.objects)]
    absent = [s for s in SHAPES if s not in present]
    asked = present + ([rng.choice(absent)] if absent else [])
    for shape in asked:
        n = sum(o.shape == shape for o in scene.objects)
        qas.append((f"How many {shape}s are there?", str(n)))
    return qas
