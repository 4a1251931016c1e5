"""glyph: "What is written on the red circle?", answered with the tiny glyph drawn on it."""

from __future__ import annotations

import random

from ..scenes import Scene
from .common import QA, subject

PREFIX = "What is written on the "


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    return [(f"{PREFIX}{o.name}?", o.glyph) for o in scene.objects if o.glyph is not None]


def sentence(qa: QA) -> QA:
    """The same question answered with a sentence naming the object first: "The red circle says 7."."""
    return qa[0], f"The {subject(qa[0], PREFIX)} says {qa[1]}."
