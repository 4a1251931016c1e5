"""gcap (grounded caption): the caption with each object's box right after its phrase."""

from __future__ import annotations

import random

from ...boxes import format_box
from ..scenes import Scene
from .common import QA, join, left_to_right

GCAP_QUESTION = "Describe the image briefly, with a box for each object."


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    return [(GCAP_QUESTION, join([f"{o.description} {format_box(o.box)}" for o in left_to_right(scene)]) + ".")]
