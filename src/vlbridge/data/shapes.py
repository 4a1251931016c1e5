"""ShapesWorld: a procedural, deterministic visual question-answering dataset.

Each scene is a small flat-coloured image with 1-4 non-overlapping filled shapes
(circle, square, triangle, diamond) in six colours and two size classes. Some large
objects carry a tiny 3x5 bitmap glyph ("0"-"9", "A", "E", "H", "K", "X") that can only
be read by looking closely. From the scene metadata we derive questions for eleven
tasks (captioning, attributes, counting, existence/hallucination, spatial relations,
glyph reading, referring-expression boxes, region description and two attribute
inventories: every object as "shape color" and as "color shape") and write them as
LLaVA-style conversation JSON next to the PNG images.

Everything is derived from string seeds of the form ``"{seed}-{split}-{index}"``, so
the same config always writes byte-identical files. ``generate`` is the entry point:

    >>> generate(ShapesWorldConfig(n=60), "data/shapes")  # doctest: +SKIP

or from the shell: ``vlbridge data shapes --out data/shapes --n 3000``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image, ImageDraw

from ..config import opt
from .boxes import format_box

# --------------------------------------------------------------------------- constants

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
LIGHT_COLORS: frozenset[str] = frozenset({"yellow", "orange", "green"})
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
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
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
IMAGE_TOKEN = "<image>"

BACKGROUND: tuple[int, int, int] = (30, 30, 30)
GLYPH_DARK: tuple[int, int, int] = (0, 0, 0)
GLYPH_LIGHT: tuple[int, int, int] = (255, 255, 255)
MIN_GAP_PX = 2               # minimum empty pixels between two object boxes
PLACEMENT_TRIES = 100        # random positions tried per object before dropping it
MIN_SPATIAL_DELTA = 0.1      # centres must differ by more than this (normalised)


def article(word: str) -> str:
    """'an' before a vowel sound ("an orange circle"), else 'a'."""
    return "an" if word[:1] in "aeiou" else "a"
GLYPH_FIT_FACTOR = 9         # a glyph is drawn only if object side >= factor * scale

# Relative frequency of tasks in multi-turn train conversations: colour and shape
# are the most frequent so that a tiny model learns them first.
TRAIN_TASK_WEIGHTS: dict[str, float] = {
    "caption": 0.7, "color": 6.0, "shape": 4.0, "count": 1.0, "exist": 1.5,
    "spatial": 1.0, "glyph": 1.0, "rec": 0.7, "reg": 0.7, "inventory": 2.5, "inventory_color": 1.0,
    "gcap": 0.5, "rec_neg": 0.35,
}

# Hand-written 3x5 bitmap font; "#" is ink.
GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    "A": (".#.", "#.#", "###", "#.#", "#.#"),
    "E": ("###", "#..", "##.", "#..", "###"),
    "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "K": ("#.#", "##.", "#..", "##.", "#.#"),
    "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
}
GLYPH_CHARS = "0123456789AEHKX"
GLYPH_W, GLYPH_H = 3, 5

QA = tuple[str, str]


# ------------------------------------------------------------------------ data classes

@dataclass
class ShapesWorldConfig:
    """Generation parameters; ``n`` scenes are split into train/val/test by ``splits``."""

    n: int = opt(3000, "total scenes (images), split into train/val/test by `splits`")
    seed: int = opt(0, "random seed; the same seed writes byte-identical files")
    image_size: int = opt(64, "image side in pixels")
    min_objects: int = opt(1, "fewest objects per scene")
    max_objects: int = opt(4, "most objects per scene")
    object_size: list[float] = opt([0.16, 0.22, 0.28, 0.36], "small_min,small_max,large_min,large_max object side "
                                                             "as a fraction of the image side")
    glyph_prob: float = opt(0.35, "probability that a large object carries a tiny glyph (digit or letter)")
    glyph_scale: int = opt(1, "pixel scale of the 3x5 bitmap glyphs (1 = 3x5 px: fine detail)")
    splits: list[float] = opt([0.8, 0.1, 0.1], "train,val,test fractions of n")
    train_turns: int = opt(8, "QA turns per training record (one image, several questions)")
    format_hint: str = opt("every", "where training records carry the short-answer instruction: 'every' "
                                    "short-answer question (LLaVA-1.5's mix) or only the 'first' one of a record "
                                    "(it holds for the conversation; a fifth fewer tokens). Val/test questions "
                                    "always carry it")
    extra_tasks: list[str] = opt([], "optional tasks to add: gcap (grounded caption: each object with its box), "
                                     "rec_neg (referring expression for an absent object, answered 'not present')")
    sentence_answers: float = opt(0.5, "share of training colour/shape questions asked without the short-answer "
                                       "instruction and answered with a sentence naming the object ('The circle "
                                       "is red.'), as LLaVA-1.5 mixes conversation and VQA answers; val/test stay "
                                       "short")
    single_turn_tasks: list[str] = opt([], "tasks written as their own single-turn training records instead of turns "
                                           "of the mixed record, so no answer can be copied from another turn about "
                                           "the same image (e.g. a box from a grounded caption)")
    single_turn_records: int = opt(0, "single-turn training records per scene for single_turn_tasks (drawn by weight)")
    task_weights: dict = opt({}, "train-mix weights overriding TRAIN_TASK_WEIGHTS, e.g. '{\"rec\": 3, \"glyph\": 0}' "
                                 "(0 = never in training records)")

    def __post_init__(self) -> None:
        # Accept lists (e.g. when rebuilt from shapesworld.json).
        self.object_size = tuple(float(v) for v in self.object_size)  # type: ignore[assignment]
        self.splits = tuple(float(v) for v in self.splits)  # type: ignore[assignment]
        max_pairs = len(COLORS) * len(SHAPES)
        if not 1 <= self.min_objects <= self.max_objects <= max_pairs:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {max_pairs}")
        if len(self.object_size) != 4 or len(self.splits) != 3:
            raise ValueError("object_size needs 4 values and splits 3 values")
        if min(self.splits) < 0 or sum(self.splits) <= 0:
            raise ValueError("splits must be non-negative with a positive sum")
        if self.n < 0 or self.image_size < 8 or self.glyph_scale < 1 or self.train_turns < 1:
            raise ValueError("invalid n, image_size, glyph_scale or train_turns")
        if self.format_hint not in ("every", "first"):
            raise ValueError(f"format_hint must be 'every' or 'first', not {self.format_hint!r}")
        if not 0 <= self.sentence_answers <= 1:
            raise ValueError(f"sentence_answers must be in [0, 1], not {self.sentence_answers}")
        if self.sentence_answers and self.format_hint == "first":
            raise ValueError("format_hint 'first' needs sentence_answers 0 (a question without the short-answer "
                             "instruction would mean a sentence answer)")
        self.extra_tasks = list(self.extra_tasks)
        unknown = [t for t in self.extra_tasks if t not in EXTRA_TASKS]
        if unknown:
            raise ValueError(f"unknown extra task(s) {unknown}; choose from {list(EXTRA_TASKS)}")
        self.single_turn_tasks = list(self.single_turn_tasks)
        unknown = [t for t in self.single_turn_tasks if t not in self.tasks()]
        if unknown or self.single_turn_records < 0 or bool(self.single_turn_records) != bool(self.single_turn_tasks):
            raise ValueError(f"single_turn_tasks {self.single_turn_tasks} must be generated tasks and come with "
                             f"single_turn_records > 0 (got {self.single_turn_records})")
        bad = {k: v for k, v in self.task_weights.items()
               if k not in TASKS + EXTRA_TASKS or not isinstance(v, (int, float)) or v < 0}
        if bad:
            raise ValueError(f"task_weights {bad}: tasks must be among {list(TASKS + EXTRA_TASKS)} with weights >= 0")

    def tasks(self) -> tuple[str, ...]:
        """The nine standard tasks, then the chosen extra tasks."""
        return TASKS + tuple(t for t in EXTRA_TASKS if t in self.extra_tasks)

    def split_sizes(self) -> dict[str, int]:
        """Number of scenes per split; rounding leftovers go to the test split."""
        total = sum(self.splits)
        n_train = round(self.n * self.splits[0] / total)
        n_val = min(round(self.n * self.splits[1] / total), self.n - n_train)
        return {"train": n_train, "val": n_val, "test": self.n - n_train - n_val}


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


# ------------------------------------------------------------------------- scene layout

PixelBox = tuple[int, int, int, int]  # x0, y0 inclusive; x1, y1 exclusive


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
    """Sample a scene: unique (color, shape) pairs, sizes, glyphs and non-overlapping boxes.

    Objects that cannot be placed after ``PLACEMENT_TRIES`` attempts are dropped, so a
    scene may have fewer objects than sampled (but always at least one).
    """
    n_objects = rng.randint(cfg.min_objects, cfg.max_objects)
    pairs = rng.sample([(c, s) for c in COLORS for s in SHAPES], n_objects)
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


# ---------------------------------------------------------------------------- rendering

def _pixel_box(obj: Obj, image_size: int) -> PixelBox:
    x0, y0, x1, y1 = (round(v * image_size) for v in obj.box)
    return x0, y0, x1, y1


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: PixelBox, fill: tuple[int, int, int]) -> None:
    x0, y0 = box[0], box[1]
    x1, y1 = box[2] - 1, box[3] - 1  # inclusive corner for PIL
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def glyph_origin(obj: Obj, image_size: int, scale: int) -> tuple[int, int]:
    """Top-left pixel of the object's glyph: centred on the box, lower on triangles."""
    x0, y0, x1, y1 = _pixel_box(obj, image_size)
    cx = (x0 + x1) / 2
    cy = y0 + (x1 - x0) * 0.64 if obj.shape == "triangle" else (y0 + y1) / 2
    return round(cx - GLYPH_W * scale / 2), round(cy - GLYPH_H * scale / 2)


def _draw_glyph(draw: ImageDraw.ImageDraw, char: str, origin: tuple[int, int],
                scale: int, fill: tuple[int, int, int]) -> None:
    gx, gy = origin
    for row, line in enumerate(GLYPHS[char]):
        for col, cell in enumerate(line):
            if cell == "#":
                x, y = gx + col * scale, gy + row * scale
                draw.rectangle((x, y, x + scale - 1, y + scale - 1), fill=fill)


def glyph_color(color: str) -> tuple[int, int, int]:
    """Ink colour of a glyph on an object of ``color``: black on light, white on dark."""
    return GLYPH_DARK if color in LIGHT_COLORS else GLYPH_LIGHT


def render_scene(scene: Scene, cfg: ShapesWorldConfig) -> Image.Image:
    """Draw the scene on a flat dark background (RGB, no antialiasing, deterministic)."""
    image = Image.new("RGB", (cfg.image_size, cfg.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_shape(draw, obj.shape, _pixel_box(obj, cfg.image_size), COLORS[obj.color])
        if obj.glyph is not None:
            origin = glyph_origin(obj, cfg.image_size, cfg.glyph_scale)
            _draw_glyph(draw, obj.glyph, origin, cfg.glyph_scale, glyph_color(obj.color))
    return image


# ---------------------------------------------------------------------------- questions

def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _caption(scene: Scene) -> list[QA]:
    ordered = sorted(scene.objects, key=lambda o: (o.center[0], o.center[1]))
    return [("Describe the image briefly.", _join([o.description for o in ordered]) + ".")]


def _unique(values: Iterable[str]) -> set[str]:
    values = list(values)
    return {v for v in values if values.count(v) == 1}


def _color(scene: Scene) -> list[QA]:
    once = _unique(o.shape for o in scene.objects)
    return [(f"What color is the {o.shape}?", o.color) for o in scene.objects if o.shape in once]


def _shape(scene: Scene) -> list[QA]:
    once = _unique(o.color for o in scene.objects)
    return [(f"What shape is the {o.color} object?", o.shape)
            for o in scene.objects if o.color in once]


def _count(scene: Scene, rng: random.Random) -> list[QA]:
    qas = [("How many objects are there?", str(len(scene.objects)))]
    present = [s for s in SHAPES if any(o.shape == s for o in scene.objects)]
    absent = [s for s in SHAPES if s not in present]
    asked = present + ([rng.choice(absent)] if absent else [])
    for shape in asked:
        n = sum(o.shape == shape for o in scene.objects)
        qas.append((f"How many {shape}s are there?", str(n)))
    return qas


def _exist_question(color: str, shape: str) -> str:
    return f"Is there {article(color)} {color} {shape} in the image?"


def _exist(scene: Scene, rng: random.Random) -> list[QA]:
    """All positives plus one negative of each available kind (hard colour/shape, absent)."""
    pairs = {(o.color, o.shape) for o in scene.objects}
    colors = {c for c, _ in pairs}
    shapes = {s for _, s in pairs}
    missing = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in pairs]
    pools = [
        [(c, s) for c, s in missing if c in colors],                      # colour present
        [(c, s) for c, s in missing if s in shapes],                      # shape present
        [(c, s) for c, s in missing if c not in colors and s not in shapes],  # absent
    ]
    negatives: list[tuple[str, str]] = []
    for pool in pools:
        choices = [p for p in pool if p not in negatives]
        if choices:
            negatives.append(rng.choice(choices))
    qas = [(_exist_question(o.color, o.shape), "yes") for o in scene.objects]
    return qas + [(_exist_question(c, s), "no") for c, s in negatives]


def _spatial(scene: Scene) -> list[QA]:
    """Left/above questions for ordered pairs whose centres differ enough on that axis."""
    qas: list[QA] = []
    for a in scene.objects:
        for b in scene.objects:
            if a is b:
                continue
            (ax, ay), (bx, by) = a.center, b.center
            if abs(ax - bx) > MIN_SPATIAL_DELTA:
                qas.append((f"Is the {a.name} left of the {b.name}?", "yes" if ax < bx else "no"))
            if abs(ay - by) > MIN_SPATIAL_DELTA:
                qas.append((f"Is the {a.name} above the {b.name}?", "yes" if ay < by else "no"))
    return qas


def _glyph(scene: Scene) -> list[QA]:
    return [(f"What is written on the {o.name}?", o.glyph)
            for o in scene.objects if o.glyph is not None]


def _rec(scene: Scene) -> list[QA]:
    return [(f"Give the bounding box of the {o.name}.", format_box(o.box)) for o in scene.objects]


def _reg(scene: Scene) -> list[QA]:
    return [(f"What is the object at {format_box(o.box)}?", o.description) for o in scene.objects]


GCAP_QUESTION = "Describe the image briefly, with a box for each object."


def _gcap(scene: Scene) -> list[QA]:
    """The caption with each object's box right after its phrase."""
    ordered = sorted(scene.objects, key=lambda o: (o.center[0], o.center[1]))
    return [(GCAP_QUESTION, _join([f"{o.description} {format_box(o.box)}" for o in ordered]) + ".")]


# The inventories list every object's two attributes in both orders. Captions and region descriptions always
# name the colour before the shape ("a small green circle"), so next-token training teaches a tiny LLM to look an
# object up by its colour at once, but never by its shape: the colour question ("What color is the circle?") then
# has to discover that lookup through a single answer token per question, and on the demo budget it did not
# (75% on colour questions: in 2-object scenes, chance). Naming the shape first ("circle green") trains the
# shape-keyed lookup directly, token by token; with both inventories in the mix colour and shape questions reach
# ~99% once the lookup forms: at 600 steps in some runs and not others, at 900 in the demo's (README, "What the
# demo learns").
INVENTORY_QUESTION = "List the objects from left to right, each as its shape and color."
COLOR_INVENTORY_QUESTION = "List the objects by color, each with its shape."


def _inventory(scene: Scene) -> list[QA]:
    """Every object as "shape color", left to right (the shape named first, then its colour)."""
    ordered = sorted(scene.objects, key=lambda o: (o.center[0], o.center[1]))
    return [(INVENTORY_QUESTION, _join([f"{o.shape} {o.color}" for o in ordered]))]


def _color_inventory(scene: Scene) -> list[QA]:
    """Every object as "color shape", sorted by colour name (then shape)."""
    pairs = sorted((o.color, o.shape) for o in scene.objects)
    return [(COLOR_INVENTORY_QUESTION, _join([f"{c} {s}" for c, s in pairs]))]


def _rec_neg(scene: Scene, rng: random.Random) -> list[QA]:
    """REC questions about absent objects (one per kind: colour present, shape present, neither)."""
    pairs = {(o.color, o.shape) for o in scene.objects}
    colors, shapes = {c for c, _ in pairs}, {s for _, s in pairs}
    missing = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in pairs]
    pools = [[(c, s) for c, s in missing if c in colors], [(c, s) for c, s in missing if s in shapes],
             [(c, s) for c, s in missing if c not in colors and s not in shapes]]
    return [(f"Give the bounding box of the {c} {s}.", NOT_PRESENT) for c, s in (rng.choice(p) for p in pools if p)]


def questions_for(scene: Scene, task: str, rng: random.Random) -> list[QA]:
    """All candidate (question, answer) pairs of ``task`` for ``scene``; [] if not applicable.

    Questions are bare (no image token, no short-answer suffix). For the balanced tasks
    ("exist", "spatial") the list holds both "yes" and "no" candidates whenever the task
    applies, so a caller can pick the answer it needs (see ``generate``).
    """
    if not scene.objects:
        return []
    builders = {
        "caption": lambda: _caption(scene),
        "color": lambda: _color(scene),
        "shape": lambda: _shape(scene),
        "count": lambda: _count(scene, rng),
        "exist": lambda: _exist(scene, rng),
        "spatial": lambda: _spatial(scene),
        "glyph": lambda: _glyph(scene),
        "rec": lambda: _rec(scene),
        "reg": lambda: _reg(scene),
        "gcap": lambda: _gcap(scene),
        "rec_neg": lambda: _rec_neg(scene, rng),
        "inventory": lambda: _inventory(scene),
        "inventory_color": lambda: _color_inventory(scene),
    }
    if task not in builders:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS + EXTRA_TASKS}")
    return builders[task]()


SENTENCE_SUFFIX = ":sentence"    # a turn's task name with this suffix: asked without the instruction, sentence answer


def as_sentence(task: str, qa: QA) -> QA:
    """The long form of a colour/shape question: the same question, answered with a sentence naming the object."""
    question, answer = qa
    if task == "color":
        thing = question.removeprefix("What color is the ").removesuffix("?")
        return question, f"The {thing} is {answer}."
    if task == "shape":
        thing = question.removeprefix("What shape is the ").removesuffix("?")
        return question, f"The {thing} is {article(answer)} {answer}."
    raise ValueError(f"no sentence form for task {task!r}")


def prompt_for(task: str, question: str) -> str:
    """Question text as shown to the model (short-answer tasks get the suffix)."""
    return f"{question}\n{SHORT_ANSWER_SUFFIX}" if task in SHORT_ANSWER_TASKS else question


# ------------------------------------------------------------------------- record building

class YesNoBalancer:
    """Chooses the yes/no answer that keeps a task balanced over a split."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def pick(self, task: str, candidates: list[QA], rng: random.Random) -> QA:
        counts = self.counts.setdefault(task, {"yes": 0, "no": 0})
        if counts["yes"] == counts["no"]:
            order = rng.sample(["yes", "no"], 2)
        else:
            order = ["yes", "no"] if counts["yes"] < counts["no"] else ["no", "yes"]
        for answer in order:
            matching = [qa for qa in candidates if qa[1] == answer]
            if matching:
                counts[answer] += 1
                return rng.choice(matching)
        raise ValueError(f"no yes/no candidates for {task}")


def _pick(task: str, candidates: list[QA], rng: random.Random, balancer: YesNoBalancer) -> QA:
    if task in BALANCED_TASKS:
        return balancer.pick(task, candidates, rng)
    return rng.choice(candidates)


def _conversation(turns: list[tuple[str, QA]], hint_once: bool = False) -> list[dict[str, str]]:
    """Human/gpt messages; ``hint_once``: only the first short-answer question carries the suffix."""
    messages: list[dict[str, str]] = []
    hinted = False
    for k, (task, (question, answer)) in enumerate(turns):
        text = question if hint_once and hinted else prompt_for(task, question)
        hinted = hinted or task in SHORT_ANSWER_TASKS
        if k == 0:
            text = f"{IMAGE_TOKEN}\n{text}"
        messages.append({"from": "human", "value": text})
        messages.append({"from": "gpt", "value": answer})
    return messages


def _eval_records(stem: str, image: str, scene: Scene, rng: random.Random,
                  balancer: YesNoBalancer, tasks: tuple[str, ...] = TASKS) -> list[dict[str, Any]]:
    """One single-turn record per applicable task (val/test)."""
    records = []
    for task in tasks:
        candidates = questions_for(scene, task, rng)
        if not candidates:
            continue
        qa = _pick(task, candidates, rng, balancer)
        records.append({"id": f"{stem}_{task}", "image": image, "task": task,
                        "conversations": _conversation([(task, qa)])})
    return records


def _train_record(stem: str, image: str, scene: Scene, rng: random.Random,
                  balancer: YesNoBalancer, n_turns: int, tasks: tuple[str, ...] = TASKS,
                  weights: dict[str, float] | None = None, hint_once: bool = False,
                  sentence_share: float = 0.0) -> dict[str, Any]:
    """One multi-turn record of up to ``n_turns`` distinct questions about one image.

    Tasks are drawn with replacement by TRAIN_TASK_WEIGHTS (updated by ``weights``; a task of weight 0 is
    never asked) (a scene may get several colour questions, one per object), so one encoded image supervises
    many answers.
    """
    weight = {**TRAIN_TASK_WEIGHTS, **(weights or {})}
    pool = {t: questions_for(scene, t, rng) for t in tasks}
    chosen: list[str] = []
    turns: list[tuple[str, QA]] = []
    while len(turns) < n_turns:
        open_tasks = [t for t in tasks if pool[t] and weight[t] > 0]
        if not open_tasks:
            break
        task = rng.choices(open_tasks, weights=[weight[t] for t in open_tasks])[0]
        qa = _pick(task, pool[task], rng, balancer)
        pool[task] = [c for c in pool[task] if c[0] != qa[0]]      # never the same question twice
        chosen.append(task)
        if sentence_share and task in ("color", "shape") and rng.random() < sentence_share:
            task, qa = task + SENTENCE_SUFFIX, as_sentence(task, qa)
        turns.append((task, qa))
    return {"id": f"{stem}_mixed", "image": image, "task": "mixed", "tasks": chosen,
            "conversations": _conversation(turns, hint_once)}


def _single_turn_records(stem: str, image: str, scene: Scene, rng: random.Random, balancer: YesNoBalancer,
                         cfg: ShapesWorldConfig) -> list[dict[str, Any]]:
    """Up to ``single_turn_records`` one-question records of the single-turn tasks (distinct questions).

    Absent-object questions (rec_neg) never outnumber the scene's objects, so that how many objects (or
    proposed regions) a scene has does not predict "not present".
    """
    weight = {**TRAIN_TASK_WEIGHTS, **cfg.task_weights}
    pool = {t: questions_for(scene, t, rng) for t in cfg.single_turn_tasks}
    if "rec_neg" in pool:
        pool["rec_neg"] = pool["rec_neg"][:len(scene.objects)]
    records = []
    for k in range(cfg.single_turn_records):
        open_tasks = [t for t in cfg.single_turn_tasks if pool[t] and weight[t] > 0]
        if not open_tasks:
            break
        task = rng.choices(open_tasks, weights=[weight[t] for t in open_tasks])[0]
        qa = _pick(task, pool[task], rng, balancer)
        pool[task] = [c for c in pool[task] if c[0] != qa[0]]
        records.append({"id": f"{stem}_{task}_{k}", "image": image, "task": task,
                        "conversations": _conversation([(task, qa)])})
    return records


# ---------------------------------------------------------------------------- generation

def scene_rng(seed: int, split: str, index: int) -> random.Random:
    """The per-scene random generator (string seeds hash identically across runs)."""
    return random.Random(f"{seed}-{split}-{index}")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def generate(cfg: ShapesWorldConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write images, train/val/test JSON, scenes.json and shapesworld.json; return a summary.

    Summary: {"train": n_records, "val": ..., "test": ..., "per_task": {split: {task: n}}},
    where per-task counts for train count conversation turns.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"per_task": {}}
    scene_meta: list[dict[str, Any]] = []
    for split, n_scenes in cfg.split_sizes().items():
        balancer = YesNoBalancer()
        records: list[dict[str, Any]] = []
        for i in range(n_scenes):
            rng = scene_rng(cfg.seed, split, i)
            scene = generate_scene(rng, cfg)
            stem = f"{split}_{i:06d}"
            image = f"images/{stem}.png"
            render_scene(scene, cfg).save(out / image, format="PNG")
            scene_meta.append({"image": image, "split": split, **scene.to_dict()})
            if split == "train":
                mixed_weights = {**cfg.task_weights, **{t: 0 for t in cfg.single_turn_tasks}}
                records.append(_train_record(stem, image, scene, rng, balancer, cfg.train_turns, cfg.tasks(),
                                             mixed_weights, hint_once=cfg.format_hint == "first",
                                             sentence_share=cfg.sentence_answers))
                if cfg.single_turn_records:
                    records.extend(_single_turn_records(stem, image, scene, rng, balancer, cfg))
            else:
                records.extend(_eval_records(stem, image, scene, rng, balancer, cfg.tasks()))
        _write_json(out / f"{split}.json", records)
        summary[split] = len(records)
        summary["per_task"][split] = _task_counts(records, cfg.tasks())
    _write_json(out / "scenes.json", scene_meta)
    _write_json(out / "shapesworld.json", {"config": dataclasses.asdict(cfg), "summary": summary})
    return summary


def _task_counts(records: list[dict[str, Any]], tasks: tuple[str, ...] = TASKS) -> dict[str, int]:
    counts = {t: 0 for t in tasks}
    for rec in records:
        for task in rec.get("tasks", [rec["task"]]):
            counts[task] += 1
    return counts
