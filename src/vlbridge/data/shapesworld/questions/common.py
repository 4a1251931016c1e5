"""Phrasing shared by the question families: the (question, answer) pair, articles, lists, object orders."""

from __future__ import annotations

from ..constants import COLORS, SHAPES
from ..scenes import Obj, Scene

QA = tuple[str, str]    # (bare question, answer): no image token, no short-answer suffix


def article(word: str) -> str:
    """'an' before a vowel sound ("an orange circle"), else 'a'."""
    return "an" if word[:1] in "aeiou" else "a"


def join(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def left_to_right(scene: Scene) -> list[Obj]:
    """The scene's objects ordered by centre x (then y)."""
    return sorted(scene.objects, key=lambda o: (o.center[0], o.center[1]))


def unique_by(scene: Scene, attribute: str) -> list[Obj]:
    """The objects whose ``attribute`` ("shape" or "color") no other object of the scene shares, in scene order."""
    values = [getattr(o, attribute) for o in scene.objects]
    return [o for o, v in zip(scene.objects, values) if values.count(v) == 1]


def subject(question: str, prefix: str) -> str:
    """What a question asks about: "What color is the circle?" with prefix "What color is the " -> "circle"."""
    return question.removeprefix(prefix).removesuffix("?")


def absent_pairs_by_kind(scene: Scene) -> list[list[tuple[str, str]]]:
    """(colour, shape) pairs not in the scene, in three pools: its colour is present, its shape is present,
    neither is present (the first two overlap; each pool in palette order)."""
    pairs = {(o.color, o.shape) for o in scene.objects}
    colors, shapes = {c for c, _ in pairs}, {s for _, s in pairs}
    missing = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in pairs]
    return [[(c, s) for c, s in missing if c in colors],
            [(c, s) for c, s in missing if s in shapes],
            [(c, s) for c, s in missing if c not in colors and s not in shapes]]
