"""shape: "What shape is the red object?", asked only about colours that occur once in the scene."""

from __future__ import annotations

import random

from ..scenes import Scene
from .common import QA, article, subject, unique_by

PREFIX = "What shape is the "


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    return [(f"{PREFIX}{o.color} object?", o.shape) for o in unique_by(scene, "color")]


def sentence(qa: QA) -> QA:
    """The same question answered with a sentence: "The red object is a circle."."""
    return qa[0], f"The {subject(qa[0], PREFIX)} is {article(qa[1])} {qa[1]}."
