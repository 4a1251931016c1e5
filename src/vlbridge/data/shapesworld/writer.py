"""Writing ShapesWorld: scenes -> PNGs, records per split (multi-turn train, single-turn val/test), JSON files.

``generate(cfg, out_dir)`` writes ``images/*.png``, ``train.json``, ``val.json``, ``test.json``,
``scenes.json`` (every scene's objects, for box supervision) and ``shapesworld.json`` (the config and a
summary). The same config always writes byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path
from typing import Any

from .config import ShapesWorldConfig
from .constants import TASKS, TRAIN_TASK_WEIGHTS
from .conversation import SENTENCE_SUFFIX, YesNoBalancer, conversation, pick
from .questions import QA, as_sentence, questions_for
from .render import render_scene
from .scenes import Scene, generate_scene, scene_rng


BOX_TEXT = re.compile(r"\[[0-9.,]+\]")     # a box as ShapesWorld writes it (``format_box``)


def boxes_in(qa: QA) -> set[str]:
    """The box strings a question or its answer shows."""
    return set(BOX_TEXT.findall(qa[0] + " " + qa[1]))


def _draw_question(tasks: tuple[str, ...] | list[str], pool: dict[str, list[QA]], weight: dict[str, float],
                   rng: random.Random, balancer: YesNoBalancer) -> tuple[str, QA] | None:
    """Draw a task by weight among those with questions left, pick one of its questions and remove it from
    ``pool`` (never the same question twice); None when no task is left."""
    open_tasks = [t for t in tasks if pool[t] and weight[t] > 0]
    if not open_tasks:
        return None
    task = rng.choices(open_tasks, weights=[weight[t] for t in open_tasks])[0]
    qa = pick(task, pool[task], rng, balancer)
    pool[task] = [c for c in pool[task] if c[0] != qa[0]]
    return task, qa


def _eval_records(stem: str, image: str, scene: Scene, rng: random.Random,
                  balancer: YesNoBalancer, tasks: tuple[str, ...] = TASKS) -> list[dict[str, Any]]:
    """One single-turn record per applicable task (val/test)."""
    records = []
    for task in tasks:
        candidates = questions_for(scene, task, rng)
        if not candidates:
            continue
        qa = pick(task, candidates, rng, balancer)
        records.append({"id": f"{stem}_{task}", "image": image, "task": task,
                        "conversations": conversation([(task, qa)])})
    return records


def _train_record(stem: str, image: str, scene: Scene, rng: random.Random,
                  balancer: YesNoBalancer, n_turns: int, tasks: tuple[str, ...] = TASKS,
                  weights: dict[str, float] | None = None, hint_once: bool = False,
                  sentence_share: float = 0.0, box_once: bool = False,
                  sentence_tasks: tuple[str, ...] | list[str] = ("color", "shape")) -> dict[str, Any]:
    """One multi-turn record of up to ``n_turns`` distinct questions about one image.

    Tasks are drawn with replacement by TRAIN_TASK_WEIGHTS (updated by ``weights``; a task of weight 0 is
    never asked) (a scene may get several colour questions, one per object), so one encoded image supervises
    many answers. With ``box_once`` a question that would show a box already shown is dropped from the pool
    (before it is drawn, so it costs the record nothing).
    """
    weight = {**TRAIN_TASK_WEIGHTS, **(weights or {})}
    pool = {t: questions_for(scene, t, rng) for t in tasks}
    chosen: list[str] = []
    turns: list[tuple[str, QA]] = []
    shown: set[str] = set()
    while len(turns) < n_turns:
        if box_once:
            pool = {t: [qa for qa in qas if not boxes_in(qa) & shown] for t, qas in pool.items()}
        drawn = _draw_question(tasks, pool, weight, rng, balancer)
        if drawn is None:
            break
        task, qa = drawn
        shown |= boxes_in(qa)
        chosen.append(task)
        if sentence_share and task in sentence_tasks and rng.random() < sentence_share:
            task, qa = task + SENTENCE_SUFFIX, as_sentence(task, qa)
        turns.append((task, qa))
    return {"id": f"{stem}_mixed", "image": image, "task": "mixed", "tasks": chosen,
            "conversations": conversation(turns, hint_once)}


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
        drawn = _draw_question(cfg.single_turn_tasks, pool, weight, rng, balancer)
        if drawn is None:
            break
        task, qa = drawn
        records.append({"id": f"{stem}_{task}_{k}", "image": image, "task": task,
                        "conversations": conversation([(task, qa)])})
    return records


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def _task_counts(records: list[dict[str, Any]], tasks: tuple[str, ...] = TASKS) -> dict[str, int]:
    counts = {t: 0 for t in tasks}
    for rec in records:
        for task in rec.get("tasks", [rec["task"]]):
            counts[task] += 1
    return counts


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
                                             sentence_share=cfg.sentence_answers, box_once=cfg.box_once,
                                             sentence_tasks=cfg.sentence_tasks))
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
