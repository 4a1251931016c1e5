"""rec (referring expression comprehension): "Give the bounding box of the red circle." -> "[x1,y1,x2,y2]"."""

from __future__ import annotations

import random

from ...boxes import format_box
from ..scenes import Scene
from .common import QA, subject

REC_PREFIX = "Give the bounding box of the "


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    return [(f"{REC_PREFIX}{o.name}.", format_box(o.box)) for o in scene.objects]


def sentence(qa: QA) -> QA:
    """The same question answered with a sentence naming the object first: "The red circle is at [...]."."""
    return qa[0], f"The {subject(qa[0], REC_PREFIX).removesuffix('.')} is at {qa[1]}."
