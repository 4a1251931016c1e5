"""Scenes: the objects of one image (shape, colour, size, box, glyph) and how they are sampled and laid out.

Every scene draws from its own generator, ``scene_rng(seed, split, index)``, seeded with the string
``"{seed}-{split}-{index}"``, so a scene never depends on the ones before it and the same config always
samples the same scenes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .config import ShapesWorldConfig
from .constants import COLORS, GLYPH_FIT_FACTOR, MIN_GAP_PX, PLACEMENT_TRIES, SHAPES, SIZES
from .glyphs import GLYPH_CHARS

PixelBox = tuple[int, int, int, int]  # x0, y0 inclusive; x1, y1 exclusive


@dataclass
class Obj:
    """One object; ``box`` is the normalised tight box (x1, y1, x2, y2) in [0, 1]."""

    shape: str
    color: str
    size: str
    box: tuple[float, float, float, float]
    glyph: str | None = None

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def name(self) -> str:
        """Unique reference within a scene, e.g. "red circle"."""
        return f"{self.color} {self.shape}"

    @property
    def description(self) -> str:
        """E.g. "a small red circle"."""
        return f"a {self.size} {self.color} {self.shape}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape, "color": self.color, "size": self.size,
            "box": [round(v, 6) for v in self.box], "glyph": self.glyph,
        }


@dataclass
class Scene:
    objects: list[Obj] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [o.to_dict() for o in self.objects]}


def scene_rng(seed: int, split: str, index: int) -> random.Random:
    """The per-scene random generator (string seeds hash identically across runs)."""
    return random.Random(f"{seed}-{split}-{index}")


def _separated(a: PixelBox, b: PixelBox, gap: int = MIN_GAP_PX) -> bool:
    """True if at least ``gap`` empty pixels lie between the two boxes on some axis."""
    return (b[0] - a[2] >= gap or a[0] - b[2] >= gap
            or b[1] - a[3] >= gap or a[1] - b[3] >= gap)


def _place(rng: random.Random, side: int, size: int, taken: list[PixelBox]) -> PixelBox | None:
    """Random position for a ``side`` x ``side`` box clear of ``taken``, or None."""
    for _ in range(PLACEMENT_TRIES):
        x0 = rng.randint(0, size - side)
        y0 = rng.randint(0, size - side)
        box = (x0, y0, x0 + side, y0 + side)
        if all(_separated(box, other) for other in taken):
            return box
    return None


def _object_side(rng: random.Random, size_class: str, cfg: ShapesWorldConfig) -> int:
    lo, hi = cfg.object_size[2:] if size_class == "large" else cfg.object_size[:2]
    side = round(rng.uniform(lo, hi) * cfg.image_size)
    return max(3, min(side, cfg.image_size))


def _glyph_fits(side: int, scale: int) -> bool:
    """Conservative test that a scaled glyph lies inside every shape of this side."""
    return side >= GLYPH_FIT_FACTOR * scale


def generate_scene(rng: random.Random, cfg: ShapesWorldConfig) -> Scene:
    """Sample a scene: unique (color, shape) pairs (none of ``cfg.exclude_pairs``), sizes, glyphs and
    non-overlapping boxes.

    Objects that cannot be placed after ``PLACEMENT_TRIES`` attempts are dropped, so a
    scene may have fewer objects than sampled (but always at least one).
    """
    n_objects = rng.randint(cfg.min_objects, cfg.max_objects)
    excluded = set(cfg.exclude_pairs)
    pairs = rng.sample([(c, s) for c in COLORS for s in SHAPES if f"{c} {s}" not in excluded], n_objects)
    taken: list[PixelBox] = []
    objects: list[Obj] = []
    for color, shape in pairs:
        size_class = rng.choice(SIZES)
        side = _object_side(rng, size_class, cfg)
        wants_glyph = rng.random() < cfg.glyph_prob
        glyph_char = rng.choice(GLYPH_CHARS)
        pixel_box = _place(rng, side, cfg.image_size, taken)
        if pixel_box is None:
            continue
        taken.append(pixel_box)
        has_glyph = (size_class == "large" and wants_glyph
                     and _glyph_fits(side, cfg.glyph_scale))
        box = tuple(v / cfg.image_size for v in pixel_box)
        objects.append(Obj(shape, color, size_class, box,  # type: ignore[arg-type]
                           glyph_char if has_glyph else None))
    return Scene(objects)
