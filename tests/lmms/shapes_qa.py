"""The ShapesWorld colour/shape questions of the lmms-eval tests: the world a tiny model is trained on, and
the 30 held-out questions shipped in data/ (``python tests/lmms/shapes_qa.py`` rewrites them).

Scenes hold one or two objects and the training mix is colour and shape questions only, so a tiny model
learns to answer some of them within a few hundred steps.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from vlbridge.data.shapesworld import TASKS, ShapesWorldConfig, generate

DATA_DIR = Path(__file__).resolve().parent / "data"
QUESTIONS = DATA_DIR / "shapes_qa.json"
PER_TASK = 15                     # colour and shape questions each
QUESTIONS_SEED = 1                # the shipped questions' scenes; training uses other seeds
ASKED = ("color", "shape")


def world(n: int, seed: int) -> ShapesWorldConfig:
    """ShapesWorld with 1-2 objects per scene and a colour/shape-only training mix."""
    weights = {task: 0.0 for task in TASKS}
    weights.update(color=6.0, shape=4.0)
    return ShapesWorldConfig(n=n, seed=seed, max_objects=2, sentence_answers=0.0, train_turns=4,
                             task_weights=weights)


def write_questions(out_dir: Path = DATA_DIR) -> Path:
    """The first PER_TASK colour and shape questions of a generated test split, with their images."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(world(n=400, seed=QUESTIONS_SEED), tmp)
        records = json.loads((Path(tmp) / "test.json").read_text())
        kept: list[dict] = []
        for task in ASKED:
            kept += [r for r in records if r["task"] == task][:PER_TASK]
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        for r in kept:
            shutil.copyfile(Path(tmp) / r["image"], out_dir / r["image"])
    path = out_dir / QUESTIONS.name
    path.write_text(json.dumps(kept, indent=1) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_questions(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR)}")
