"""ShapesWorld documents: interleaved image-text records where the next image or word is predictable in context.

``generate_documents(cfg, out)`` writes ``images/*.png`` and, per split, a mix of document records (see
``data.records``) and ShapesWorld's chat QA records:

- *story*: 3-5 frames of one scene, each followed by its caption; one object changes the same way from frame
  to frame, moving a fixed step in one direction or cycling through 2-3 colours, so the next frame is
  predictable only from the frames before it (the direction, or the cycle, is the story's own);
- *few-shot episode*: k (image, answer) pairs and a query image, all after the same bare question ("Answer:");
  the answers follow one rule per episode (the colour of the largest object, the colour of the leftmost, the
  shape of the largest, the shape of the leftmost, or the number of objects), which only the examples tell;
  query scenes are chosen so that the two rules of one kind give different answers;
- *t2i* / *i2t*: a caption then its image, an image then its caption;
- *qa*: ShapesWorld's multi-turn question records (tasks ``qa_tasks``) about single scenes.

Document grammar: items joined by newlines, each an image (``<image>``) or a text ("a red circle above a blue
square", "Answer: red"). Single scenes are ShapesWorld's own (``scene_rng(seed, split, i)``, images
``{split}_{i:06d}.png``), so a test scene here is the same scene as in ``vlbridge data shapes`` with the same seed
and scene settings.

Test files: ``test.json`` holds what ``vlbridge eval`` scores: the QA records of the first ``test_n`` test
scenes and every few-shot query at each k of ``eval_k`` (tasks ``fewshot_k0``, ``fewshot_k1`` ...; the same
query and examples at every k); ``generation.json`` holds what image generation is judged on: next-frame
items (a story without its last frame, that frame's objects and what changed) and text-to-image prompts (the
test scenes' captions, drawn as ``lavit measure`` draws them). ``scenes.json`` lists every image's objects;
``shapesworld_docs.json`` the config and counts.
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import opt
from ...errors import UserError
from ..scene_captions import caption
from ..template import IMAGE_TOKEN
from .config import ShapesWorldConfig
from .constants import COLORS, MIN_GAP_PX
from .conversation import YesNoBalancer
from .render import render_scene
from .scenes import Obj, Scene, _separated, generate_scene, scene_rng
from .writer import _eval_records, _train_record

KINDS = ("story", "fewshot", "t2i", "i2t", "qa")
RULES = ("color_largest", "color_leftmost", "shape_largest", "shape_leftmost", "count")
QUESTION = "Answer:"
SIZE_MARGIN, LEFT_MARGIN = 1.2, 0.1      # the largest side >= 1.2 x the next; the leftmost centre 0.1 further left


@dataclass
class DocsConfig:
    n: int = opt(3000, "training documents (the val split gets a tenth as many)")
    seed: int = opt(0, "random seed; the same config writes byte-identical files")
    mix: dict = opt({"story": 1.0, "fewshot": 1.0, "t2i": 1.0, "i2t": 1.0, "qa": 1.0},
                    "weights of the document kinds in train/val: story, fewshot, t2i, i2t, qa")
    story_frames: list[int] = opt([3, 5], "fewest and most frames of a story")
    move_step: list[float] = opt([0.15, 0.25], "range of a moving object's step per frame (fraction of the image)")
    max_k: int = opt(4, "most examples before a training episode's query (k is drawn from 0..max_k)")
    eval_k: list[int] = opt([0, 1, 2, 4], "k of the test few-shot records (the same query and examples at every k)")
    test_n: int = opt(200, "test items of each kind: QA scenes, few-shot queries, next-frame stories, text->image "
                           "prompts")
    qa_tasks: list[str] = opt(["caption", "color", "shape"], "ShapesWorld tasks of the QA records")
    scenes: ShapesWorldConfig = field(default_factory=ShapesWorldConfig)

    def __post_init__(self) -> None:
        if isinstance(self.scenes, dict):
            self.scenes = ShapesWorldConfig(**self.scenes)
        self.scenes.__post_init__()
        bad = {k: v for k, v in self.mix.items() if k not in KINDS or not isinstance(v, (int, float)) or v < 0}
        if bad or not any(self.mix.values()):
            raise ValueError(f"mix {self.mix}: weights >= 0 (not all 0) of the kinds {list(KINDS)}")
        lo, hi = self.story_frames
        if not 3 <= lo <= hi:
            raise ValueError(f"story_frames {self.story_frames}: need 3 <= fewest <= most")
        if not 0 < self.move_step[0] <= self.move_step[1] < 0.5:
            raise ValueError(f"move_step {self.move_step}: need 0 < low <= high < 0.5")
        if self.n < 0 or self.test_n < 0 or self.max_k < 0 or any(k < 0 or k > 8 for k in self.eval_k):
            raise ValueError("n, test_n and max_k must be >= 0 and eval_k within 0..8")


# ----------------------------------------------------------------------------- stories


def _side(obj: Obj) -> float:
    return obj.box[2] - obj.box[0]


def _pixel_box(box, size: int) -> tuple[int, int, int, int]:
    return tuple(round(v * size) for v in box)  # type: ignore[return-value]


def _clear(box, others: list[Obj], size: int) -> bool:
    inside = 0 <= box[0] and 0 <= box[1] and box[2] <= 1 and box[3] <= 1
    return inside and all(_separated(_pixel_box(box, size), _pixel_box(o.box, size), MIN_GAP_PX) for o in others)


def _moved(rng: random.Random, obj: Obj, others: list[Obj], frames: int, cfg: DocsConfig):
    """Boxes of a fixed-step move in a random direction that stays in the image and clear of the others."""
    size = cfg.scenes.image_size
    for dx, dy in rng.sample([(1, 0), (-1, 0), (0, 1), (0, -1)], 4):
        step = rng.uniform(*cfg.move_step)
        boxes = [tuple(v + s * f * step for v, s in zip(obj.box, (dx, dy, dx, dy))) for f in range(frames)]
        if all(_clear(b, others, size) for b in boxes[1:]):
            return boxes, {(1, 0): "right", (-1, 0): "left", (0, 1): "down", (0, -1): "up"}[(dx, dy)]
    return None


def make_story(rng: random.Random, cfg: DocsConfig) -> dict | None:
    """A story: frames (scenes), the index of the changing object and how it changes; None if none fits."""
    scene_cfg = dataclasses.replace(cfg.scenes, max_objects=min(cfg.scenes.max_objects, 3))
    scene = generate_scene(rng, scene_cfg)
    n = rng.randint(*cfg.story_frames)
    i = rng.randrange(len(scene.objects))
    obj, others = scene.objects[i], scene.objects[:i] + scene.objects[i + 1:]
    if n >= 4 and rng.random() < 0.5:                    # a colour cycle needs a repeat before the last frame
        period = rng.choice([2, 3]) if n >= 5 else 2
        free = [c for c in COLORS if c != obj.color and (c, obj.shape) not in {(o.color, o.shape) for o in others}]
        cycle = [obj.color] + rng.sample(free, period - 1)
        frames = [[dataclasses.replace(obj, color=cycle[f % period]) if k == i else o
                   for k, o in enumerate(scene.objects)] for f in range(n)]
        return {"frames": frames, "changed": i, "change": "color", "detail": cycle}
    moved = _moved(rng, obj, others, n, cfg)
    if moved is None:
        return None
    boxes, direction = moved
    frames = [[dataclasses.replace(obj, box=boxes[f]) if k == i else o for k, o in enumerate(scene.objects)]
              for f in range(n)]
    return {"frames": frames, "changed": i, "change": "move", "detail": direction}


def story_until(rng: random.Random, cfg: DocsConfig) -> dict:
    for _ in range(100):
        story = make_story(rng, cfg)
        if story is not None:
            return story
    raise UserError("could not lay out a story in 100 tries: make objects smaller or move_step shorter")


# ----------------------------------------------------------------------------- few-shot rules


def rule_answer(rule: str, objects: list[Obj]) -> str | None:
    """The rule's answer for a scene, or None when it is not clear-cut (no clearly largest/leftmost object)."""
    if rule == "count":
        return str(len(objects))
    attr, which = rule.split("_")
    if which == "largest":
        ranked = sorted(objects, key=_side, reverse=True)
        clear = len(ranked) == 1 or _side(ranked[0]) >= SIZE_MARGIN * _side(ranked[1])
    else:
        ranked = sorted(objects, key=lambda o: o.center[0])
        clear = len(ranked) == 1 or ranked[1].center[0] - ranked[0].center[0] >= LEFT_MARGIN
    return getattr(ranked[0], attr) if clear else None


def sibling(rule: str) -> str | None:
    """The other rule with the same kind of answer (largest <-> leftmost); None for count."""
    if rule == "count":
        return None
    attr, which = rule.split("_")
    return f"{attr}_{'leftmost' if which == 'largest' else 'largest'}"


def episode_scene(rng: random.Random, rule: str, cfg: DocsConfig, discriminative: bool) -> tuple[Scene, str]:
    """A scene whose answer under ``rule`` is clear-cut (and, if ``discriminative``, differs from the sibling
    rule's answer, so answering needs the rule and not just its kind)."""
    scene_cfg = cfg.scenes if rule == "count" else dataclasses.replace(cfg.scenes, min_objects=max(2, cfg.scenes.min_objects))
    for _ in range(1000):
        scene = generate_scene(rng, scene_cfg)
        answer = rule_answer(rule, scene.objects)
        other = sibling(rule)
        if answer is None:
            continue
        if discriminative and other is not None and rule_answer(other, scene.objects) in (None, answer):
            continue
        return scene, answer
    raise UserError(f"no scene answers rule {rule!r} clearly in 1000 tries")


def episode_text(answers: list[str]) -> str:
    """k examples then the query: '<image>\\nAnswer: red\\n<image>\\nAnswer:' (the query's answer follows)."""
    parts = [f"{IMAGE_TOKEN}\n{QUESTION} {a}" for a in answers] + [f"{IMAGE_TOKEN}\n{QUESTION}"]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- writing


def join_items(items: list[str]) -> str:
    return "\n".join(items)


def story_text(captions: list[str]) -> str:
    """'<image>\\ncaption 1\\n<image>\\ncaption 2 ...'; the context of a next-frame item ends after the last
    caption (the frame to produce comes next)."""
    items = []
    for cap in captions:
        items += [IMAGE_TOKEN, cap]
    return join_items(items)


class Writer:
    """Renders scenes once per file name and remembers every image's objects (scenes.json)."""

    def __init__(self, out: Path, cfg: DocsConfig):
        self.out, self.cfg = out, cfg
        self.scenes: list[dict[str, Any]] = []
        (out / "images").mkdir(parents=True, exist_ok=True)

    def image(self, name: str, objects: list[Obj], split: str) -> str:
        rel = f"images/{name}.png"
        render_scene(Scene(list(objects)), self.cfg.scenes).save(self.out / rel, format="PNG")
        self.scenes.append({"image": rel, "split": split, "objects": [o.to_dict() for o in objects]})
        return rel


def caption_of(objects: list[Obj], rng: random.Random) -> str:
    return caption([o.to_dict() for o in objects], rng)


def story_record(w: Writer, split: str, i: int, rng: random.Random) -> dict:
    story = story_until(rng, w.cfg)
    images = [w.image(f"{split}_story{i:05d}_f{f}", frame, split) for f, frame in enumerate(story["frames"])]
    captions = [caption_of(frame, rng) for frame in story["frames"]]
    return {"id": f"{split}_story{i:05d}", "task": "story", "images": images, "text": story_text(captions)}


def fewshot_record(w: Writer, split: str, i: int, rng: random.Random) -> dict:
    rule, k = rng.choice(RULES), rng.randint(0, w.cfg.max_k)
    pairs = [episode_scene(rng, rule, w.cfg, discriminative=False) for _ in range(k)]
    query, answer = episode_scene(rng, rule, w.cfg, discriminative=True)
    images = [w.image(f"{split}_fewshot{i:05d}_{j}", s.objects, split) for j, (s, _) in enumerate(pairs + [(query, "")])]
    text = episode_text([a for _, a in pairs]) + f" {answer}"
    return {"id": f"{split}_fewshot{i:05d}", "task": "fewshot", "rule": rule, "images": images, "text": text}


def single_scene(w: Writer, split: str, j: int) -> tuple[Scene, str]:
    """ShapesWorld's scene j of the split (the same as `vlbridge data shapes` with this seed) and its image."""
    scene = generate_scene(scene_rng(w.cfg.seed, split, j), w.cfg.scenes)
    return scene, w.image(f"{split}_{j:06d}", scene.objects, split)


def training_documents(w: Writer, split: str, n: int) -> list[dict]:
    kinds = [k for k in KINDS if w.cfg.mix.get(k, 0) > 0]
    weights = [w.cfg.mix[k] for k in kinds]
    pick = random.Random(f"{w.cfg.seed}-{split}-kinds")
    balancer, records, j = YesNoBalancer(), [], 0
    for i in range(n):
        kind = pick.choices(kinds, weights)[0]
        rng = random.Random(f"{w.cfg.seed}-{split}-{kind}-{i}")
        if kind == "story":
            records.append(story_record(w, split, i, rng))
        elif kind == "fewshot":
            records.append(fewshot_record(w, split, i, rng))
        else:
            scene, image = single_scene(w, split, j)
            j += 1
            cap = caption_of(scene.objects, rng)
            if kind == "t2i":
                records.append({"id": f"{split}_t2i{i:05d}", "task": "t2i", "images": [image],
                                "text": join_items([cap, IMAGE_TOKEN])})
            elif kind == "i2t":
                records.append({"id": f"{split}_i2t{i:05d}", "task": "i2t", "images": [image],
                                "text": join_items([IMAGE_TOKEN, cap])})
            else:
                records.append(_train_record(f"{split}_{j - 1:06d}", image, scene, rng, balancer,
                                             w.cfg.scenes.train_turns, tuple(w.cfg.qa_tasks)))
    return records


def test_files(w: Writer) -> tuple[list[dict], dict]:
    cfg, split = w.cfg, "test"
    balancer, records = YesNoBalancer(), []
    t2i, caption_rng = [], random.Random(cfg.seed)           # as `lavit measure` captions its test scenes
    for j in range(cfg.test_n):
        scene, image = single_scene(w, split, j)
        records += _eval_records(f"{split}_{j:06d}", image, scene, scene_rng(cfg.seed, f"{split}-qa", j), balancer,
                                 tuple(cfg.qa_tasks))
        t2i.append({"id": f"t2i_{j:05d}", "caption": caption_of(scene.objects, caption_rng), "image": image,
                    "objects": [o.to_dict() for o in scene.objects]})
    shots = max(cfg.eval_k, default=0)
    for i in range(cfg.test_n):
        rng = random.Random(f"{cfg.seed}-{split}-fewshot-{i}")
        rule = RULES[i % len(RULES)]
        pairs = [episode_scene(rng, rule, cfg, discriminative=False) for _ in range(shots)]
        query, answer = episode_scene(rng, rule, cfg, discriminative=True)
        images = [w.image(f"{split}_fewshot{i:05d}_{j}", s.objects, split) for j, (s, _) in enumerate(pairs)]
        query_image = w.image(f"{split}_fewshot{i:05d}_query", query.objects, split)
        for k in cfg.eval_k:
            records.append({"id": f"{split}_fewshot{i:05d}_k{k}", "task": f"fewshot_k{k}", "rule": rule,
                            "images": images[:k] + [query_image], "text": episode_text([a for _, a in pairs[:k]]),
                            "answer": f" {answer}"})
    next_frame = []
    for i in range(cfg.test_n):
        rng = random.Random(f"{cfg.seed}-{split}-story-{i}")
        story = story_until(rng, cfg)
        frames = story["frames"]
        images = [w.image(f"{split}_story{i:05d}_f{f}", frame, split) for f, frame in enumerate(frames)]
        captions = [caption_of(frame, rng) for frame in frames]
        next_frame.append({"id": f"next_frame_{i:05d}", "images": images[:-1], "text": story_text(captions[:-1]),
                           "change": story["change"], "detail": story["detail"], "changed": story["changed"],
                           "target": {"image": images[-1], "objects": [o.to_dict() for o in frames[-1]]},
                           "last": {"image": images[-2], "objects": [o.to_dict() for o in frames[-2]]}})
    return records, {"next_frame": next_frame, "text_to_image": t2i}


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def generate_documents(cfg: DocsConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write every file; returns the counts per split and kind."""
    out = Path(out_dir)
    w = Writer(out, cfg)
    summary: dict[str, Any] = {}
    for split, n in (("train", cfg.n), ("val", cfg.n // 10)):
        records = training_documents(w, split, n)
        _write_json(out / f"{split}.json", records)
        summary[split] = {kind: sum(r["task"] == kind or (kind == "qa" and r["task"] == "mixed") for r in records)
                          for kind in KINDS}
    records, generation = test_files(w)
    _write_json(out / "test.json", records)
    _write_json(out / "generation.json", generation)
    _write_json(out / "scenes.json", w.scenes)
    summary["test"] = {"records": len(records), "next_frame": len(generation["next_frame"]),
                       "text_to_image": len(generation["text_to_image"])}
    _write_json(out / "shapesworld_docs.json", {"config": dataclasses.asdict(cfg), "summary": summary})
    # the single-scene settings, as `vlbridge data shapes` writes them (read by tools that judge sizes)
    _write_json(out / "shapesworld.json", {"config": dataclasses.asdict(cfg.scenes), "summary": summary})
    return summary
