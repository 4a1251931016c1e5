"""ShapesWorld's vocabulary and fixed numbers: palette, shapes, sizes, task names, layout limits, train mix."""

from __future__ import annotations

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
LIGHT_COLORS: frozenset[str] = frozenset({"yellow", "orange", "green"})   # glyphs on these are drawn in black
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")

BACKGROUND: tuple[int, int, int] = (30, 30, 30)
GLYPH_DARK: tuple[int, int, int] = (0, 0, 0)
GLYPH_LIGHT: tuple[int, int, int] = (255, 255, 255)

TASKS: tuple[str, ...] = (
    "caption", "color", "shape", "count", "exist", "spatial", "glyph", "rec", "reg", "inventory", "inventory_color",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Optional tasks (``ShapesWorldConfig.extra_tasks``): grounded captions (every object with its box) and
# referring expressions for absent objects, answered NOT_PRESENT (a grounding model must not always box).
EXTRA_TASKS: tuple[str, ...] = ("gcap", "rec_neg")
NOT_PRESENT = "not present"
SHORT_ANSWER_TASKS: frozenset[str] = frozenset(
    {"color", "shape", "count", "exist", "spatial", "glyph", "reg"}
)
BALANCED_TASKS: frozenset[str] = frozenset({"exist", "spatial"})
SENTENCE_FORM_TASKS: tuple[str, ...] = ("color", "shape", "glyph", "rec")   # tasks with a sentence-answer form
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."

MIN_GAP_PX = 2               # minimum empty pixels between two object boxes
PLACEMENT_TRIES = 100        # random positions tried per object before dropping it
MIN_SPATIAL_DELTA = 0.1      # centres must differ by more than this (normalised)
GLYPH_FIT_FACTOR = 9         # a glyph is drawn only if object side >= factor * scale

# Relative frequency of tasks in multi-turn train conversations: colour and shape
# are the most frequent so that a tiny model learns them first.
TRAIN_TASK_WEIGHTS: dict[str, float] = {
    "caption": 0.7, "color": 6.0, "shape": 4.0, "count": 1.0, "exist": 1.5,
    "spatial": 1.0, "glyph": 1.0, "rec": 0.7, "reg": 0.7, "inventory": 2.5, "inventory_color": 1.0,
    "gcap": 0.5, "rec_neg": 0.35,
}
