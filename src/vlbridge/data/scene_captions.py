"""Text->image prompts for ShapesWorld scenes, and parsing them back into the objects they ask for.

A caption names every object as "a [size] colour shape" (the size is said or left out at random), and for two
objects their relation when their centres differ enough on one axis ("a red circle above a small blue
square"); three or four objects are listed left to right ("a red circle, a blue square and a green
triangle"). ``parse_prompt`` reads such prompts (also typed by a user) into a ``PromptSpec``, which the
checker compares with the objects found in an image.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .shapesworld import COLORS, MIN_SPATIAL_DELTA, SHAPES, SIZES, article

RELATIONS = ("above", "below", "left of", "right of")
GENERATE_PREFIX = "Draw "          # the user turn of a text->image record: "Draw a red circle above ..."


@dataclass(frozen=True)
class PromptObject:
    color: str
    shape: str
    size: str | None = None


@dataclass(frozen=True)
class PromptSpec:
    objects: tuple[PromptObject, ...]
    relation: tuple[int, str, int] | None = None     # (object index, relation, object index)


def _center(obj: dict) -> tuple[float, float]:
    x1, y1, x2, y2 = obj["box"]
    return (x1 + x2) / 2, (y1 + y2) / 2


def relation_between(a: dict, b: dict) -> str | None:
    """Where a is relative to b, on the axis where their centres differ most (None if too close)."""
    (ax, ay), (bx, by) = _center(a), _center(b)
    dx, dy = ax - bx, ay - by
    if max(abs(dx), abs(dy)) <= MIN_SPATIAL_DELTA:
        return None
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "left of" if dx < 0 else "right of"


def describe(obj: dict, with_size: bool) -> str:
    words = ([obj["size"]] if with_size else []) + [obj["color"], obj["shape"]]
    return f"{article(words[0])} {' '.join(words)}"


def caption(objects: list[dict], rng: random.Random) -> str:
    """A prompt for a scene's objects (dicts with color, shape, size, box)."""
    if not objects:
        raise ValueError("a caption needs at least one object")
    descs = [describe(o, rng.random() < 0.5) for o in objects]
    if len(objects) == 2:
        i, j = (0, 1) if rng.random() < 0.5 else (1, 0)
        rel = relation_between(objects[i], objects[j])
        if rel is not None:
            return f"{descs[i]} {rel} {descs[j]}"
    order = sorted(range(len(objects)), key=lambda k: _center(objects[k]))
    parts = [descs[k] for k in order]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


_OBJECT = re.compile(r"\b(?:a|an)\s+(?:(" + "|".join(SIZES) + r")\s+)?(" + "|".join(COLORS) + r")\s+("
                     + "|".join(SHAPES) + r")s?\b", re.IGNORECASE)
_RELATION = re.compile(r"\b(above|below|left of|right of)\b", re.IGNORECASE)


def parse_prompt(text: str) -> PromptSpec:
    """The objects ("a [size] colour shape") and the relation between the first two, if one is named."""
    matches = list(_OBJECT.finditer(text))
    if not matches:
        raise ValueError(f"no object of the form 'a [small|large] <colour> <shape>' in prompt {text!r} "
                         f"(colours: {', '.join(COLORS)}; shapes: {', '.join(SHAPES)})")
    objects = tuple(PromptObject(m.group(2).lower(), m.group(3).lower(), m.group(1).lower() if m.group(1) else None)
                    for m in matches)
    relation = None
    if len(matches) >= 2:
        rel = _RELATION.search(text[matches[0].end(): matches[1].start()])
        if rel:
            relation = (0, rel.group(1).lower(), 1)
    return PromptSpec(objects, relation)
