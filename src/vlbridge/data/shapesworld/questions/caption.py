"""caption: a one-sentence description listing every object (size, colour, shape) from left to right."""

from __future__ import annotations

import random

from ..scenes import Scene
from .common import QA, join, left_to_right

CAPTION_QUESTION = "Describe the image briefly."


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    return [(CAPTION_QUESTION, join([o.description for o in left_to_right(scene)]) + ".")]
