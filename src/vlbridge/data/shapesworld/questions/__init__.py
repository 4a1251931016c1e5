"""The question families of ShapesWorld and their registry: task name -> question writer.

A writer takes a scene and its random generator and returns every candidate (question, answer) pair of its
task, bare (no image token, no short-answer suffix); ``[]`` when the task does not apply to the scene. One
module per family; ``inventory`` holds both attribute orders (tasks ``inventory`` and ``inventory_color``).
"""

from __future__ import annotations

import random
from typing import Callable

from ..constants import EXTRA_TASKS, TASKS
from ..scenes import Scene
from . import caption, color, count, exist, gcap, glyph, inventory, rec, rec_neg, reg, shape, spatial
from .common import QA, article
from .gcap import GCAP_QUESTION
from .inventory import COLOR_INVENTORY_QUESTION, INVENTORY_QUESTION

__all__ = ["QA", "WRITERS", "SENTENCE_FORMS", "questions_for", "as_sentence", "article",
           "GCAP_QUESTION", "INVENTORY_QUESTION", "COLOR_INVENTORY_QUESTION"]

Writer = Callable[[Scene, random.Random], list[QA]]

WRITERS: dict[str, Writer] = {
    "caption": caption.questions,
    "color": color.questions,
    "shape": shape.questions,
    "count": count.questions,
    "exist": exist.questions,
    "spatial": spatial.questions,
    "glyph": glyph.questions,
    "rec": rec.questions,
    "reg": reg.questions,
    "gcap": gcap.questions,
    "rec_neg": rec_neg.questions,
    "inventory": inventory.by_shape,
    "inventory_color": inventory.by_color,
}

# Tasks whose answer also has a long form: the same question answered with a sentence naming the object first
# (``ShapesWorldConfig.sentence_tasks`` chooses which of them get sentence answers in training).
SENTENCE_FORMS: dict[str, Callable[[QA], QA]] = {"color": color.sentence, "shape": shape.sentence,
                                                 "glyph": glyph.sentence, "rec": rec.sentence}


def questions_for(scene: Scene, task: str, rng: random.Random) -> list[QA]:
    """All candidate (question, answer) pairs of ``task`` for ``scene``; [] if not applicable.

    Questions are bare (no image token, no short-answer suffix). For the balanced tasks
    ("exist", "spatial") the list holds both "yes" and "no" candidates whenever the task
    applies, so a caller can pick the answer it needs (see ``generate``).
    """
    if not scene.objects:
        return []
    if task not in WRITERS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS + EXTRA_TASKS}")
    return WRITERS[task](scene, rng)


def as_sentence(task: str, qa: QA) -> QA:
    """The long form of a question (``SENTENCE_FORMS``): the same question, answered with a sentence naming the
    object first."""
    if task not in SENTENCE_FORMS:
        raise ValueError(f"no sentence form for task {task!r}")
    return SENTENCE_FORMS[task](qa)
