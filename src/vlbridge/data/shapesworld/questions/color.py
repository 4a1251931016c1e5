"""color: "What color is the circle?", asked only about shapes that occur once in the scene."""

from __future__ import annotations

import random

from ..scenes import Scene
from .common import QA, subject, unique_by

PREFIX = "What color is the "


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    return [(f"{PREFIX}{o.shape}?", o.color) for o in unique_by(scene, "shape")]


def sentence(qa: QA) -> QA:
    """The same question answered with a sentence: "The circle is red."."""
    return qa[0], f"The {subject(qa[0], PREFIX)} is {qa[1]}."
