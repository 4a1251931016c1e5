"""inventory and inventory_color: every object's two attributes, listed in both orders.

``inventory`` names the shape first ("circle green and square red"), left to right; ``inventory_color`` names
the colour first ("green circle and red square"), sorted by colour. Captions and region descriptions always
name the colour first, so the shape-first list is the text that teaches finding an object by its shape, the
lookup a colour question ("What color is the circle?") needs.
"""

from __future__ import annotations

import random

from ..scenes import Scene
from .common import QA, join, left_to_right

INVENTORY_QUESTION = "List the objects from left to right, each as its shape and color."
COLOR_INVENTORY_QUESTION = "List the objects by color, each with its shape."


def by_shape(scene: Scene, rng: random.Random) -> list[QA]:
    """Every object as "shape color", left to right (the shape named first, then its colour)."""
    return [(INVENTORY_QUESTION, join([f"{o.shape} {o.color}" for o in left_to_right(scene)]))]


def by_color(scene: Scene, rng: random.Random) -> list[QA]:
    """Every object as "color shape", sorted by colour name (then shape)."""
    pairs = sorted((o.color, o.shape) for o in scene.objects)
    return [(COLOR_INVENTORY_QUESTION, join([f"{c} {s}" for c, s in pairs]))]
