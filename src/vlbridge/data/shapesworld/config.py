"""``ShapesWorldConfig``: every generation parameter of ShapesWorld, with its default and validation."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import opt
from .constants import COLORS, EXTRA_TASKS, SENTENCE_FORM_TASKS, SHAPES, TASKS


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
                                    "(it holds for the conversation; fewer tokens). Val/test questions "
                                    "always carry it")
    extra_tasks: list[str] = opt([], "optional tasks to add: gcap (grounded caption: each object with its box), "
                                     "rec_neg (referring expression for an absent object, answered 'not present')")
    sentence_answers: float = opt(0.5, "share of training questions of the sentence_tasks asked without the "
                                       "short-answer instruction and answered with a sentence naming the object "
                                       "('The circle is red.'), as LLaVA-1.5 mixes conversation and VQA answers; "
                                       "val/test stay short")
    sentence_tasks: list[str] = opt(["color", "shape"], "tasks whose training questions are sometimes (sentence_answers) "
                                                        "answered with a sentence naming the object first: color, "
                                                        "shape, glyph ('The red circle says 7.'), rec ('The red "
                                                        "circle is at [...].')")
    single_turn_tasks: list[str] = opt([], "tasks written as their own single-turn training records instead of turns "
                                           "of the mixed record, so no answer can be copied from another turn about "
                                           "the same image (e.g. a box from a grounded caption)")
    single_turn_records: int = opt(0, "single-turn training records per scene for single_turn_tasks (drawn by weight)")
    task_weights: dict = opt({}, "train-mix weights overriding TRAIN_TASK_WEIGHTS, e.g. '{\"rec\": 3, \"glyph\": 0}' "
                                 "(0 = never in training records)")
    box_once: bool = opt(False, "a training record shows each box at most once (in a question or an answer), so "
                                "a REC answer is never copied from an earlier region question about the same "
                                "object, nor a region description read off an earlier REC question")
    exclude_pairs: list[str] = opt([], "colour-shape pairs never drawn, e.g. 'red circle,blue square' (a test set "
                                       "made without them measures pairs never seen together in training)")

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
        self.sentence_tasks = list(self.sentence_tasks)
        bad_forms = [t for t in self.sentence_tasks if t not in SENTENCE_FORM_TASKS]
        if bad_forms:
            raise ValueError(f"sentence_tasks {bad_forms}: only {', '.join(SENTENCE_FORM_TASKS)} have a sentence form")
        self.extra_tasks = list(self.extra_tasks)
        unknown = [t for t in self.extra_tasks if t not in EXTRA_TASKS]
        if unknown:
            raise ValueError(f"unknown extra task(s) {unknown}; choose from {list(EXTRA_TASKS)}")
        self.single_turn_tasks = list(self.single_turn_tasks)
        unknown = [t for t in self.single_turn_tasks if t not in self.tasks()]
        if unknown or self.single_turn_records < 0 or bool(self.single_turn_records) != bool(self.single_turn_tasks):
            raise ValueError(f"single_turn_tasks {self.single_turn_tasks} must be generated tasks and come with "
                             f"single_turn_records > 0 (got {self.single_turn_records})")
        self.exclude_pairs = list(self.exclude_pairs)
        bad_pairs = [p for p in self.exclude_pairs if p not in {f"{c} {s}" for c in COLORS for s in SHAPES}]
        if bad_pairs:
            raise ValueError(f"exclude_pairs {bad_pairs}: each must be '<colour> <shape>' with a colour among "
                             f"{list(COLORS)} and a shape among {list(SHAPES)}")
        if self.max_objects > max_pairs - len(set(self.exclude_pairs)):
            raise ValueError(f"max_objects {self.max_objects} exceeds the {max_pairs - len(set(self.exclude_pairs))} "
                             "colour-shape pairs left after exclude_pairs")
        bad = {k: v for k, v in self.task_weights.items()
               if k not in TASKS + EXTRA_TASKS or not isinstance(v, (int, float)) or v < 0}
        if bad:
            raise ValueError(f"task_weights {bad}: tasks must be among {list(TASKS + EXTRA_TASKS)} with weights >= 0")

    def tasks(self) -> tuple[str, ...]:
        """The standard tasks (``TASKS``), then the chosen extra tasks."""
        return TASKS + tuple(t for t in EXTRA_TASKS if t in self.extra_tasks)

    def split_sizes(self) -> dict[str, int]:
        """Number of scenes per split; rounding leftovers go to the test split."""
        total = sum(self.splits)
        n_train = round(self.n * self.splits[0] / total)
        n_val = min(round(self.n * self.splits[1] / total), self.n - n_train)
        return {"train": n_train, "val": n_val, "test": self.n - n_train - n_val}
