"""spatial: "Is the red circle left of / above the blue square?" for pairs whose centres are far enough apart.

A balanced task: the writer picks "yes" or "no" candidates so that each split holds as many of both.
"""

from __future__ import annotations

import random

from ..constants import MIN_SPATIAL_DELTA
from ..scenes import Scene
from .common import QA


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    """Left/above questions for ordered pairs whose centres differ enough on that axis."""
    qas: list[QA] = []
    for a in scene.objects:
        for b in scene.objects:
            if a is b:
                continue
            (ax, ay), (bx, by) = a.center, b.center
            if abs(ax - bx) > MIN_SPATIAL_DELTA:
                qas.append((f"Is the {a.name} left of the {b.name}?", "yes" if ax < bx else "no"))
            if abs(ay - by) > MIN_SPATIAL_DELTA:
                qas.append((f"Is the {a.name} above the {b.name}?", "yes" if ay < by else "no"))
    return qas
