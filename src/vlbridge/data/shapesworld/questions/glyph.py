"""glyph: "What is written on the red circle?", answered with the tiny glyph drawn on it."""

from __future__ import annotations

import random

from ..scenes import Scene
from .common import QA


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    return [(f"What is written on the {o.name}?", o.glyph) for o in scene.objects if o.glyph is not None]
