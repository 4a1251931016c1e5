"""ShapesWorld: a procedural, deterministic visual question-answering and grounding dataset.

Each scene is a small flat-coloured image with 1-4 non-overlapping filled shapes (circle, square, triangle,
diamond) in six colours and two size classes. Some large objects carry a tiny 3x5 bitmap glyph ("0"-"9",
"A", "E", "H", "K", "X") that can only be read by looking closely. From the scene metadata come questions
for eleven tasks (captioning, attributes, counting, existence, spatial relations, glyph reading,
referring-expression boxes, region description and two attribute inventories), plus two optional ones
(grounded captions, absent-object referring expressions), written as LLaVA-style conversation JSON next to
the PNG images.

The package, bottom to top: ``constants`` and ``glyphs`` (vocabulary, palette, font), ``config``
(``ShapesWorldConfig``), ``scenes`` (sampling), ``render`` (drawing), ``questions`` (one module per question
family and the registry), ``conversation`` (messages, yes/no balance) and ``writer`` (records and files).

Everything is derived from string seeds of the form ``"{seed}-{split}-{index}"``, so the same config always
writes byte-identical files. ``generate`` is the entry point:

    >>> generate(ShapesWorldConfig(n=60), "data/shapes")  # doctest: +SKIP

or from the shell: ``vlbridge data shapes --out data/shapes --n 3000``.
"""

from __future__ import annotations

from .config import ShapesWorldConfig
from .constants import (
    BACKGROUND,
    BALANCED_TASKS,
    COLORS,
    EXTRA_TASKS,
    GLYPH_DARK,
    GLYPH_LIGHT,
    LIGHT_COLORS,
    MIN_SPATIAL_DELTA,
    NOT_PRESENT,
    SHAPES,
    SHORT_ANSWER_SUFFIX,
    SHORT_ANSWER_TASKS,
    SIZES,
    SPLITS,
    TASKS,
    TRAIN_TASK_WEIGHTS,
)
from .conversation import prompt_for
from .glyphs import GLYPH_CHARS, GLYPHS
from .questions import GCAP_QUESTION, QA, article, as_sentence, questions_for
from .render import glyph_color, glyph_origin, render_scene
from .scenes import Obj, Scene, generate_scene, scene_rng
from .writer import generate

__all__ = [
    "BACKGROUND", "BALANCED_TASKS", "COLORS", "EXTRA_TASKS", "GLYPH_CHARS", "GLYPH_DARK", "GLYPH_LIGHT", "GLYPHS",
    "LIGHT_COLORS", "MIN_SPATIAL_DELTA", "NOT_PRESENT", "SHAPES", "SHORT_ANSWER_SUFFIX", "SHORT_ANSWER_TASKS",
    "SIZES", "SPLITS", "TASKS", "TRAIN_TASK_WEIGHTS", "GCAP_QUESTION", "QA", "Obj", "Scene", "ShapesWorldConfig",
    "article", "as_sentence", "generate", "generate_scene", "glyph_color", "glyph_origin", "prompt_for",
    "questions_for", "render_scene", "scene_rng",
]
