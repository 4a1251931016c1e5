"""reg (region description): "What is the object at [x1,y1,x2,y2]?" -> "a small red circle"."""

from __future__ import annotations

import random

from ...boxes import format_box
from ..scenes import Scene
from .common import QA


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    return [(f"What is the object at {format_box(o.box)}?", o.description) for o in scene.objects]
