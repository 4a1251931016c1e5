"""rec_neg: the REC question about an object that is not in the scene, answered NOT_PRESENT."""

from __future__ import annotations

import random

from ..constants import NOT_PRESENT
from ..scenes import Scene
from .common import QA, absent_pairs_by_kind
from .rec import REC_PREFIX


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    """One absent object of each kind that exists: colour present, shape present, neither."""
    pools = absent_pairs_by_kind(scene)
    return [(f"{REC_PREFIX}{c} {s}.", NOT_PRESENT) for c, s in (rng.choice(p) for p in pools if p)]
