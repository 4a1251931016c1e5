"""Property tests for the ShapesWorld dataset generator (vlbridge.data.shapesworld)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlbridge.data.boxes import format_box
from vlbridge.data.shapesworld import (
    BACKGROUND,
    COLORS,
    EXTRA_TASKS,
    GLYPHS,
    SHAPES,
    SHORT_ANSWER_SUFFIX,
    TASKS,
    Obj,
    Scene,
    ShapesWorldConfig,
    generate,
    generate_scene,
    questions_for,
    render_scene,
    scene_rng,
)
from vlbridge.data.shapesworld.questions import WRITERS

SPLITS = ("train", "val", "test")
BOX_RE = re.compile(r"^\[(\d\.\d{3}),(\d\.\d{3}),(\d\.\d{3}),(\d\.\d{3})\]$")
SHORT_TASKS = {"color", "shape", "count", "exist", "spatial", "glyph", "reg"}


# ----------------------------------------------------------------------------- helpers

def load(out: Path, name: str):
    return json.loads((out / name).read_text())


def pixel_box(box, size: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (round(v * size) for v in box)
    return x0, y0, x1, y1


def image_array(out: Path, image: str) -> np.ndarray:
    return np.asarray(Image.open(out / image).convert("RGB"))


def object_color(arr: np.ndarray, box, size: int) -> tuple[int, int, int]:
    """Most common non-background, non-glyph (not black/white) colour inside the box."""
    x0, y0, x1, y1 = pixel_box(box, size)
    pixels = [tuple(int(c) for c in p) for p in arr[y0:y1, x0:x1].reshape(-1, 3)]
    ignore = {tuple(BACKGROUND), (0, 0, 0), (255, 255, 255)}
    return Counter(p for p in pixels if p not in ignore).most_common(1)[0][0]


def qa(record) -> tuple[str, str]:
    """(question without image token / suffix, answer) of a single-turn record."""
    question = record["conversations"][0]["value"].removeprefix("<image>\n")
    question = question.removesuffix("\n" + SHORT_ANSWER_SUFFIX)
    return question, record["conversations"][1]["value"]


def scenes_by_image(out: Path) -> dict[str, dict]:
    return {s["image"]: s for s in load(out, "scenes.json")}


def find(scene: dict, color: str | None = None, shape: str | None = None) -> list[dict]:
    return [o for o in scene["objects"]
            if (color is None or o["color"] == color) and (shape is None or o["shape"] == shape)]


def center(obj: dict) -> tuple[float, float]:
    x1, y1, x2, y2 = obj["box"]
    return (x1 + x2) / 2, (y1 + y2) / 2


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shapes")
    summary = generate(ShapesWorldConfig(n=400, seed=0), out)
    return out, summary


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runs[name] = tmp_path_factory.mktemp(f"run_{name}")
        generate(ShapesWorldConfig(n=60, seed=seed), runs[name])
    return runs


# -------------------------------------------------------------------------------- tests

def test_format_box() -> None:
    assert format_box([0.125, 0.25, 0.375, 0.5]) == "[0.125,0.250,0.375,0.500]"
    assert format_box((0, 0, 1, 1)) == "[0.000,0.000,1.000,1.000]"
    with pytest.raises(ValueError):
        format_box([0.1, 0.2, 0.3])


def test_glyph_font_is_3x5_and_unique() -> None:
    assert set(GLYPHS) == set("0123456789AEHKX")
    for rows in GLYPHS.values():
        assert len(rows) == 5 and all(len(r) == 3 and set(r) <= {"#", "."} for r in rows)
    assert len(set(GLYPHS.values())) == len(GLYPHS)


def test_same_seed_is_byte_identical(small_runs) -> None:
    a, b = small_runs["a"], small_runs["b"]
    for name in ("train.json", "val.json", "test.json", "scenes.json", "shapesworld.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pngs = sorted(p.name for p in (a / "images").iterdir())
    assert pngs == sorted(p.name for p in (b / "images").iterdir())
    for png in pngs[::7]:
        assert (a / "images" / png).read_bytes() == (b / "images" / png).read_bytes(), png


def test_different_seed_differs(small_runs) -> None:
    a, c = small_runs["a"], small_runs["c"]
    assert (a / "scenes.json").read_bytes() != (c / "scenes.json").read_bytes()
    assert (a / "train.json").read_bytes() != (c / "train.json").read_bytes()
    differing = [p.name for p in (a / "images").iterdir()
                 if p.read_bytes() != (c / "images" / p.name).read_bytes()]
    assert len(differing) > 50


def test_summary_and_files(data) -> None:
    out, summary = data
    cfg_file = load(out, "shapesworld.json")
    assert cfg_file["summary"] == json.loads(json.dumps(summary))
    assert cfg_file["config"]["n"] == 400
    scenes = load(out, "scenes.json")
    assert len(scenes) == 400
    assert Counter(s["split"] for s in scenes) == {"train": 320, "val": 40, "test": 40}
    for split in SPLITS:
        records = load(out, f"{split}.json")
        assert summary[split] == len(records)
        assert set(summary["per_task"][split]) == set(TASKS)
        for rec in records:
            assert (out / rec["image"]).is_file()
    assert summary["train"] == 320
    for split in ("val", "test"):
        assert sum(summary["per_task"][split].values()) == summary[split]


def test_scene_objects_valid(data) -> None:
    out, _ = data
    size = 64
    for scene in load(out, "scenes.json"):
        objects = scene["objects"]
        assert 1 <= len(objects) <= 4
        assert len({(o["color"], o["shape"]) for o in objects}) == len(objects)
        boxes = []
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert o["shape"] in SHAPES and o["color"] in COLORS and o["size"] in ("small", "large")
            assert o["glyph"] is None or (o["glyph"] in GLYPHS and o["size"] == "large")
            boxes.append(pixel_box(o["box"], size))
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                separated = (b[0] - a[2] >= 2 or a[0] - b[2] >= 2
                             or b[1] - a[3] >= 2 or a[1] - b[3] >= 2)
                assert separated, (scene["image"], a, b)


def test_boxes_are_tight_and_colors_match_pixels(data) -> None:
    out, _ = data
    for scene in load(out, "scenes.json")[::5]:
        arr = image_array(out, scene["image"])
        assert arr.shape == (64, 64, 3)
        for o in scene["objects"]:
            x0, y0, x1, y1 = pixel_box(o["box"], 64)
            ink = (arr[y0:y1, x0:x1] != BACKGROUND).any(-1)
            ys, xs = np.nonzero(ink)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x1 - x0, y1 - y0)
            assert object_color(arr, o["box"], 64) == COLORS[o["color"]]
        covered = np.zeros((64, 64), bool)
        for o in scene["objects"]:
            x0, y0, x1, y1 = pixel_box(o["box"], 64)
            covered[y0:y1, x0:x1] = True
        assert (arr[~covered] == BACKGROUND).all()


def test_record_format(data) -> None:
    out, _ = data
    for split in ("val", "test"):
        for rec in load(out, f"{split}.json"):
            assert rec["task"] in TASKS
            assert rec["id"] == f"{Path(rec['image']).stem}_{rec['task']}"
            conv = rec["conversations"]
            assert [m["from"] for m in conv] == ["human", "gpt"]
            assert conv[0]["value"].startswith("<image>\n")
            assert conv[0]["value"].count("<image>") == 1
            has_suffix = conv[0]["value"].endswith("\n" + SHORT_ANSWER_SUFFIX)
            assert has_suffix == (rec["task"] in SHORT_TASKS)
            answer = conv[1]["value"]
            assert answer == answer.strip() and answer
            if rec["task"] != "glyph":
                assert answer == answer.lower()
            assert answer.endswith(".") == (rec["task"] == "caption")


def test_train_records_multi_turn(data) -> None:
    out, summary = data
    task_counts: Counter = Counter()
    for rec in load(out, "train.json"):
        assert rec["task"] == "mixed"
        conv = rec["conversations"]
        n = len(rec["tasks"])
        assert 1 <= n <= ShapesWorldConfig().train_turns and len(conv) == 2 * n
        assert [m["from"] for m in conv] == ["human", "gpt"] * n
        assert conv[0]["value"].startswith("<image>\n")
        assert sum(m["value"].count("<image>") for m in conv) == 1
        questions = [m["value"].replace("<image>\n", "") for m in conv[::2]]
        assert len(set(questions)) == n                       # never the same question twice
        task_counts.update(rec["tasks"])
    assert dict(task_counts) == {t: c for t, c in summary["per_task"]["train"].items() if c}
    top = [t for t, _ in task_counts.most_common(3)]
    assert "color" in top and "shape" in top


@pytest.mark.parametrize("hint", ["first", "every"])
def test_format_hint_in_training_records(tmp_path, hint) -> None:
    """'every': each short-answer question carries the suffix (LLaVA); 'first': only a record's first one."""
    generate(ShapesWorldConfig(n=60, seed=2, format_hint=hint, sentence_answers=0.0), tmp_path)
    for rec in load(tmp_path, "train.json"):
        short = [t in SHORT_TASKS for t in rec["tasks"]]
        hinted = [m["value"].endswith("\n" + SHORT_ANSWER_SUFFIX) for m in rec["conversations"][::2]]
        if hint == "every":
            assert hinted == short
        else:
            first = short.index(True) if any(short) else None
            assert hinted == [i == first for i in range(len(short))]
    for rec in load(tmp_path, "test.json"):      # evaluation questions always carry it
        assert rec["conversations"][0]["value"].endswith(SHORT_ANSWER_SUFFIX) == (rec["task"] in SHORT_TASKS)


def test_sentence_answers_name_the_object_and_agree_with_the_scene(tmp_path) -> None:
    """sentence_answers=1: every training colour/shape question loses the instruction and gets a sentence."""
    generate(ShapesWorldConfig(n=60, seed=4, sentence_answers=1.0), tmp_path)
    scenes = {s["image"]: s for s in load(tmp_path, "scenes.json")}
    seen = 0
    for rec in load(tmp_path, "train.json"):
        objects = scenes[rec["image"]]["objects"]
        for task, (q, a) in zip(rec["tasks"], zip(rec["conversations"][::2], rec["conversations"][1::2])):
            question, answer = q["value"].replace("<image>\n", ""), a["value"]
            if task == "color":
                shape = re.fullmatch(r"What color is the (\w+)\?", question)[1]
                (color,) = [o["color"] for o in objects if o["shape"] == shape]
                assert answer == f"The {shape} is {color}."
            elif task == "shape":
                color = re.fullmatch(r"What shape is the (\w+) object\?", question)[1]
                (shape,) = [o["shape"] for o in objects if o["color"] == color]
                assert answer == f"The {color} object is {'an' if shape[0] in 'aeiou' else 'a'} {shape}."
            else:
                assert "The " not in answer[:4] or task == "caption"
                continue
            seen += 1
    assert seen > 50
    for rec in load(tmp_path, "test.json"):            # evaluation stays short-answer
        if rec["task"] in ("color", "shape"):
            assert rec["conversations"][0]["value"].endswith(SHORT_ANSWER_SUFFIX)
            assert " " not in rec["conversations"][1]["value"]


def test_sentence_answers_need_the_instruction_everywhere() -> None:
    with pytest.raises(ValueError, match="format_hint"):
        ShapesWorldConfig(format_hint="first")


def test_answers_agree_with_metadata(data) -> None:
    out, _ = data
    scenes = scenes_by_image(out)
    checked = Counter()
    for rec in load(out, "val.json") + load(out, "test.json"):
        scene, task = scenes[rec["image"]], rec["task"]
        question, answer = qa(rec)
        objs = scene["objects"]
        if task == "caption":
            ordered = sorted(objs, key=center)
            parts = [f"a {o['size']} {o['color']} {o['shape']}" for o in ordered]
            expected = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
            assert answer == expected + "."
        elif task == "color":
            shape = re.fullmatch(r"What color is the (\w+)\?", question)[1]
            (obj,) = find(scene, shape=shape)
            assert answer == obj["color"]
        elif task == "shape":
            color = re.fullmatch(r"What shape is the (\w+) object\?", question)[1]
            (obj,) = find(scene, color=color)
            assert answer == obj["shape"]
        elif task == "count":
            m = re.fullmatch(r"How many (\w+)s are there\?", question)
            shape = None if m[1] == "object" else m[1]
            assert answer == str(len(find(scene, shape=shape)))
        elif task == "exist":
            color, shape = re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", question).groups()
            assert answer == ("yes" if find(scene, color, shape) else "no")
        elif task == "spatial":
            m = re.fullmatch(r"Is the (\w+) (\w+) (left of|above) the (\w+) (\w+)\?", question)
            (a,), (b,) = find(scene, m[1], m[2]), find(scene, m[4], m[5])
            axis = 0 if m[3] == "left of" else 1
            assert abs(center(a)[axis] - center(b)[axis]) > 0.1
            assert answer == ("yes" if center(a)[axis] < center(b)[axis] else "no")
        elif task == "glyph":
            color, shape = re.fullmatch(r"What is written on the (\w+) (\w+)\?", question).groups()
            (obj,) = find(scene, color, shape)
            assert answer == obj["glyph"]
        elif task == "rec":
            color, shape = re.fullmatch(r"Give the bounding box of the (\w+) (\w+)\.", question).groups()
            (obj,) = find(scene, color, shape)
            assert BOX_RE.match(answer) and answer == format_box(obj["box"])
        elif task == "reg":
            box = re.fullmatch(r"What is the object at (\[.*\])\?", question)[1]
            assert BOX_RE.match(box)
            (obj,) = [o for o in objs if format_box(o["box"]) == box]
            assert answer == f"a {obj['size']} {obj['color']} {obj['shape']}"
        elif task == "inventory":      # shape then colour, left to right
            assert question == "List the objects from left to right, each as its shape and color."
            parts = [f"{o['shape']} {o['color']}" for o in sorted(objs, key=center)]
            assert answer == (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])
        elif task == "inventory_color":      # colour then shape, by colour name
            assert question == "List the objects by color, each with its shape."
            parts = sorted(f"{o['color']} {o['shape']}" for o in objs)
            assert answer == (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])
        checked[task] += 1
    assert set(checked) == set(TASKS)


def test_color_answers_match_image_pixels(data) -> None:
    out, _ = data
    scenes = scenes_by_image(out)
    n = 0
    for rec in load(out, "test.json"):
        if rec["task"] != "color":
            continue
        question, answer = qa(rec)
        shape = re.fullmatch(r"What color is the (\w+)\?", question)[1]
        (obj,) = find(scenes[rec["image"]], shape=shape)
        assert object_color(image_array(out, rec["image"]), obj["box"], 64) == COLORS[answer]
        n += 1
    assert n > 10


def test_color_and_shape_questions_only_for_unique_attributes(data) -> None:
    out, _ = data
    for scene in load(out, "scenes.json")[:100]:
        s = Scene([Obj(o["shape"], o["color"], o["size"], tuple(o["box"]), o["glyph"])
                   for o in scene["objects"]])
        shape_counts = Counter(o.shape for o in s.objects)
        color_counts = Counter(o.color for o in s.objects)
        rng = random.Random(0)
        asked_shapes = [re.fullmatch(r"What color is the (\w+)\?", q)[1]
                        for q, _ in questions_for(s, "color", rng)]
        assert sorted(asked_shapes) == sorted(k for k, v in shape_counts.items() if v == 1)
        asked_colors = [re.fullmatch(r"What shape is the (\w+) object\?", q)[1]
                        for q, _ in questions_for(s, "shape", rng)]
        assert sorted(asked_colors) == sorted(k for k, v in color_counts.items() if v == 1)


@pytest.mark.parametrize("task", ["exist", "spatial"])
def test_yes_no_balanced_on_test(data, task) -> None:
    out, _ = data
    answers = Counter(qa(r)[1] for r in load(out, "test.json") if r["task"] == task)
    total = answers["yes"] + answers["no"]
    assert total >= 20 and set(answers) == {"yes", "no"}
    assert abs(answers["yes"] - answers["no"]) <= 0.1 * total


def test_exist_negatives_include_hard_and_absent(data) -> None:
    out, _ = data
    scenes = scenes_by_image(out)
    kinds = Counter()
    for split in ("val", "test"):
        for rec in load(out, f"{split}.json"):
            if rec["task"] != "exist" or qa(rec)[1] != "no":
                continue
            color, shape = re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", qa(rec)[0]).groups()
            scene = scenes[rec["image"]]
            has_color, has_shape = bool(find(scene, color=color)), bool(find(scene, shape=shape))
            kinds["hard" if has_color or has_shape else "absent"] += 1
    assert kinds["hard"] >= 5 and kinds["absent"] >= 5


def test_glyph_pixels_spell_the_answer(data) -> None:
    out, _ = data
    scenes = scenes_by_image(out)
    n = 0
    for rec in load(out, "test.json") + load(out, "val.json"):
        if rec["task"] != "glyph":
            continue
        _, answer = qa(rec)
        obj = next(o for o in scenes[rec["image"]]["objects"] if o["glyph"] == answer)
        x0, y0, x1, y1 = pixel_box(obj["box"], 64)
        crop = image_array(out, rec["image"])[y0:y1, x0:x1]
        ink = (crop == (0, 0, 0)).all(-1) | (crop == (255, 255, 255)).all(-1)
        ys, xs = np.nonzero(ink)
        bitmap = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        expected = np.array([[c == "#" for c in row] for row in GLYPHS[answer]])
        assert bitmap.shape == (5, 3) and (bitmap == expected).all(), answer
        n += 1
    assert n > 5


def test_glyph_scale_changes_glyph_pixel_size() -> None:
    obj = Obj("square", "blue", "large", (10 / 64, 10 / 64, 32 / 64, 32 / 64), "8")
    plain = Obj("square", "blue", "large", obj.box, None)
    for scale in (1, 2):
        cfg = ShapesWorldConfig(glyph_scale=scale)
        diff = (np.asarray(render_scene(Scene([obj]), cfg))
                != np.asarray(render_scene(Scene([plain]), cfg))).any(-1)
        ys, xs = np.nonzero(diff)
        assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (5 * scale, 3 * scale)
        assert diff.sum() == 13 * scale * scale  # "8" has 13 ink cells


def test_generated_glyphs_scale(tmp_path) -> None:
    cfg = ShapesWorldConfig(n=40, seed=3, glyph_scale=2, glyph_prob=1.0, splits=(0, 0, 1))
    generate(cfg, tmp_path)
    n = 0
    for scene in load(tmp_path, "scenes.json"):
        arr = image_array(tmp_path, scene["image"])
        for o in scene["objects"]:
            if o["glyph"] is None:
                continue
            x0, y0, x1, y1 = pixel_box(o["box"], 64)
            crop = arr[y0:y1, x0:x1]
            ink = (crop == (0, 0, 0)).all(-1) | (crop == (255, 255, 255)).all(-1)
            cells = sum(row.count("#") for row in GLYPHS[o["glyph"]])
            assert ink.sum() == 4 * cells
            n += 1
    assert n > 5


def test_generate_scene_respects_config() -> None:
    cfg = ShapesWorldConfig(min_objects=2, max_objects=3, glyph_prob=0.0)
    for i in range(50):
        scene = generate_scene(random.Random(i), cfg)
        assert 2 <= len(scene.objects) <= 3
        assert all(o.glyph is None for o in scene.objects)
    again = generate_scene(random.Random(7), cfg)
    assert again == generate_scene(random.Random(7), cfg)


def test_every_task_has_one_question_writer() -> None:
    assert set(WRITERS) == set(TASKS) | set(EXTRA_TASKS)
    assert ShapesWorldConfig(extra_tasks=list(EXTRA_TASKS)).tasks() == TASKS + EXTRA_TASKS


# ------------------------------------------------------------------ determinism of every option

# A tiny config that exercises every option the writer has: extra tasks, single-turn records, sentence answers,
# more objects, glyphs; its val and test splits hold every task.
EVERY_OPTION = dict(n=12, image_size=32, max_objects=5, glyph_prob=0.6, extra_tasks=["gcap", "rec_neg"],
                    single_turn_tasks=["rec_neg"], single_turn_records=1, train_turns=5, splits=[0.5, 0.25, 0.25])


def file_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def content_digest(out: Path) -> str:
    """sha256 over every file's name and content, PNGs by their decoded pixels (not their compressed bytes)."""
    h = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        h.update(path.relative_to(out).as_posix().encode() + b"\0")
        if path.suffix == ".png":
            with Image.open(path) as img:
                h.update(f"{img.mode} {img.size}".encode() + np.asarray(img).tobytes())
        else:
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def option_runs(tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        runs[name] = tmp_path_factory.mktemp(f"options_{name}")
        generate(ShapesWorldConfig(seed=seed, **EVERY_OPTION), runs[name])
    return runs


def test_every_option_same_seed_same_bytes_other_seed_other_files(option_runs) -> None:
    a, b, c = (file_bytes(option_runs[k]) for k in "abc")
    assert len(a) == 12 + 5 and a == b
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a)                       # every image and JSON file


def test_every_option_pinned_content(option_runs) -> None:
    """Guards the on-disk format: this digest changes whenever any written byte of JSON or any pixel changes.

    ShapesWorld is a benchmark: a model trained or scored on it is only comparable with another if both saw the
    same files, so the files a seed writes must not change by accident (a refactor, a reordered random draw, a
    new default). PNGs are hashed by their decoded pixels, so a Pillow release that compresses differently does
    not trip it. When a change to the data is intended, regenerate the digest and say so in the commit.
    """
    assert content_digest(option_runs["a"]) == "938d02bb92784e6fae5648359cc8fc57635bbee6262ed2f037311b16211ca084"



def test_box_once_never_shows_a_box_twice_in_a_record(tmp_path) -> None:
    """With box_once a REC answer cannot be copied from an earlier region question, nor a region description
    read off an earlier REC question; without it, such records occur on the same scenes."""
    from vlbridge.data.shapesworld.writer import BOX_TEXT
    options = dict(n=60, max_objects=4, train_turns=8, splits=[1, 0, 0], task_weights={"rec": 3, "reg": 3})

    def repeats(box_once: bool) -> int:
        out = tmp_path / str(box_once)
        generate(ShapesWorldConfig(box_once=box_once, **options), out)
        count = 0
        for rec in json.loads((out / "train.json").read_text()):
            boxes = [b for turn in rec["conversations"] for b in BOX_TEXT.findall(turn["value"])]
            count += len(boxes) - len(set(boxes))
        return count

    assert repeats(False) > 0 and repeats(True) == 0


def test_excluded_pairs_never_appear() -> None:
    cfg = ShapesWorldConfig(n=1, max_objects=6, exclude_pairs=["red circle", "blue square"])
    seen = {o.name for i in range(300) for o in generate_scene(scene_rng(0, "train", i), cfg).objects}
    assert "red circle" not in seen and "blue square" not in seen and "red square" in seen
    with pytest.raises(ValueError, match="exclude_pairs"):
        ShapesWorldConfig(exclude_pairs=["red blob"])


def test_sentence_tasks_answer_glyph_and_rec_questions_with_the_object_first(tmp_path) -> None:
    from vlbridge.data.shapesworld.constants import SENTENCE_FORM_TASKS
    from vlbridge.data.shapesworld.questions import SENTENCE_FORMS
    assert set(SENTENCE_FORMS) == set(SENTENCE_FORM_TASKS)
    generate(ShapesWorldConfig(n=60, max_objects=4, glyph_prob=1.0, splits=[1, 0, 0], sentence_answers=1.0,
                               sentence_tasks=["glyph", "rec"], task_weights={"glyph": 5, "rec": 5}), tmp_path)
    pairs = [(r["conversations"][k]["value"], r["conversations"][k + 1]["value"])
             for r in json.loads((tmp_path / "train.json").read_text()) for k in range(0, len(r["conversations"]), 2)]
    glyph = [(q, a) for q, a in pairs if "What is written on the" in q]
    rec = [(q, a) for q, a in pairs if "Give the bounding box of the" in q]
    assert glyph and all(re.fullmatch(r"The \w+ \w+ says \w\.", a) and q.split("the ")[-1][:-1] in a for q, a in glyph)
    assert rec and all(re.fullmatch(r"The \w+ \w+ is at \[[0-9.,]+\]\.", a) for _, a in rec)
    assert all(SHORT_ANSWER_SUFFIX not in q for q, _ in glyph)         # asked without the short-answer instruction
    with pytest.raises(ValueError, match="sentence form"):
        ShapesWorldConfig(sentence_tasks=["count"])
