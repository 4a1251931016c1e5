"""ShapesWorld documents: files validate as records, are deterministic, and say what they promise (stories change
one object consistently, few-shot answers follow the episode's rule, test scenes are ShapesWorld's own)."""
from __future__ import annotations

import json

import pytest

from vlbridge.data.records import SkipReport, load_records
from vlbridge.data.shapesworld import ShapesWorldConfig, generate
from vlbridge.data.shapesworld.documents import DocsConfig, generate_documents, rule_answer, sibling
from vlbridge.data.shapesworld.scenes import Obj

SCENES = dict(image_size=32, object_size=[0.2, 0.24, 0.3, 0.36], max_objects=3)


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    generate_documents(DocsConfig(n=60, test_n=6, move_step=[0.15, 0.2], scenes=ShapesWorldConfig(**SCENES)), out)
    return out


def objects_of(docs) -> dict[str, list[Obj]]:
    return {s["image"]: [Obj(**o) for o in s["objects"]] for s in json.loads((docs / "scenes.json").read_text())}


def test_every_file_loads_as_records_without_skips(docs):
    for name in ("train.json", "val.json", "test.json"):
        report = SkipReport()
        records = load_records(docs / name, on_error="skip", report=report)
        assert records and not report.entries, report.summary(len(records))
    train = json.loads((docs / "train.json").read_text())
    assert {r["task"] for r in train} == {"story", "fewshot", "t2i", "i2t", "mixed"}


def test_the_same_config_writes_the_same_files(docs, tmp_path):
    generate_documents(DocsConfig(n=60, test_n=6, move_step=[0.15, 0.2], scenes=ShapesWorldConfig(**SCENES)), tmp_path)
    for name in ("train.json", "test.json", "generation.json", "scenes.json"):
        assert (tmp_path / name).read_text() == (docs / name).read_text()


def test_stories_change_one_object_the_same_way_every_frame(docs):
    objects = objects_of(docs)
    stories = [r for r in json.loads((docs / "train.json").read_text()) if r["task"] == "story"]
    items = json.loads((docs / "generation.json").read_text())["next_frame"]
    assert stories and len(items) == 6
    for rec in stories:
        frames = [objects[im] for im in rec["images"]]
        assert 3 <= len(frames) <= 5 and rec["text"].count("<image>") == len(frames)
        changed = [k for k in range(len(frames[0])) if any(f[k] != frames[0][k] for f in frames)]
        assert len(changed) == 1
        k = changed[0]
        centres = [f[k].center for f in frames]
        steps = {(round(b[0] - a[0], 4), round(b[1] - a[1], 4)) for a, b in zip(centres, centres[1:])}
        colours = [f[k].color for f in frames]
        moved, recoloured = len(steps) == 1 and steps != {(0.0, 0.0)}, len(set(colours)) > 1
        assert moved != recoloured                                        # one kind of change per story
        if recoloured:
            period = len(set(colours))
            assert all(colours[i] == colours[i % period] for i in range(len(colours))) and len(colours) > period
    for it in items:                                                      # the context ends before the frame
        assert it["text"].count("<image>") == len(it["images"]) and it["target"]["image"] not in it["images"]


def test_few_shot_answers_follow_the_rule_and_queries_need_it(docs):
    objects = objects_of(docs)
    test = [r for r in json.loads((docs / "test.json").read_text()) if r["task"].startswith("fewshot_k")]
    assert {r["task"] for r in test} == {"fewshot_k0", "fewshot_k1", "fewshot_k2", "fewshot_k4"}
    for rec in test:
        *examples, query = rec["images"]
        answers = [line.split("Answer: ")[1] for line in rec["text"].split("\n") if line.startswith("Answer: ")]
        assert len(answers) == len(examples) == int(rec["task"][-1])
        assert all(rule_answer(rec["rule"], objects[im]) == a for im, a in zip(examples, answers))
        assert rule_answer(rec["rule"], objects[query]) == rec["answer"].strip()
        other = sibling(rec["rule"])
        if other:
            assert rule_answer(other, objects[query]) not in (None, rec["answer"].strip())
    by_query = {}
    for rec in test:
        by_query.setdefault(rec["images"][-1], set()).add(rec["answer"])
    assert len(by_query) == 6 and all(len(v) == 1 for v in by_query.values())   # one query, every k


def test_test_scenes_are_shapesworlds_own(docs, tmp_path):
    generate(ShapesWorldConfig(n=60, **SCENES), tmp_path)
    shapes = {s["image"]: s["objects"] for s in json.loads((tmp_path / "scenes.json").read_text())}
    items = json.loads((docs / "generation.json").read_text())["text_to_image"]
    assert all(it["objects"] == shapes[it["image"]] for it in items)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="mix"):
        DocsConfig(mix={"poems": 1.0})
    with pytest.raises(ValueError, match="story_frames"):
        DocsConfig(story_frames=[2, 4])
