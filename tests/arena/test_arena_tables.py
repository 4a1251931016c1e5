"""The arena's arithmetic by hand: headline metrics, groups, intervals over seeds, the paired comparison with mlp
and its marks, the blind prior, labelled variants."""
from __future__ import annotations

import json

import pytest

from vlbridge.arena.config import ArenaConfig, parse_rows
from vlbridge.arena.prior import prior_metrics
from vlbridge.arena.report import NOT_SUPPORTED, difference_table, headline, summary_scores, table
from vlbridge.arena.stats import interval, paired, supported


def test_headline_metrics_and_means_by_hand():
    metrics = {"caption": {"metric": "captioning", "main": "cider", "cider": 1.5, "bleu4": 0.2, "tokenizer": "ptb"},
               "color": {"main": "vqa_acc", "vqa_acc": 0.5, "exact_match": 0.25},
               "glyph": {"main": "exact_match", "exact_match": 1.0},
               "count": {"main": "count_acc", "count_acc": 0.25, "exact_match": 0.0, "unparsable": 2},
               "rec": {"main": "acc@0.5", "acc@0.5": 0.75, "mean_iou": 0.6},
               "spatial": {"accuracy": 0.5, "exact_match": 0.0, "n": 4},            # no "main": accuracy first
               "overall": {"main": "exact_match", "exact_match": 0.1}}
    assert headline("caption", metrics["caption"]) == ("cider", 1.5)
    assert headline("count", metrics["count"]) == ("count_acc", 0.25)
    assert headline("spatial", metrics["spatial"]) == ("accuracy", 0.5)
    s = summary_scores({"metrics": metrics}, ["caption", "color", "glyph", "count", "rec", "spatial"])
    assert s["mean"] == pytest.approx((0.5 + 1.0 + 0.25 + 0.75 + 0.5) / 5)        # CIDEr (unbounded) left out
    assert s["fine"] == pytest.approx((1.0 + 0.25 + 0.5 + 0.75) / 4)             # glyph, count, spatial, rec


def test_size_and_clutter_groups_by_hand(tmp_path):
    from vlbridge.arena.breakdown import group_scores
    small = {"shape": "circle", "color": "red", "size": "small"}
    large = {"shape": "square", "color": "blue", "size": "large"}
    scenes = {"a.png": [small, large], "b.png": [small, large] + [{"shape": "diamond", "color": c, "size": "large"}
                                                                 for c in ("red", "green", "blue")]}
    items = [("color", "a.png", "<image>\nWhat color is the circle?\nAnswer ...", "red", 1.0),       # small
             ("shape", "a.png", "What shape is the blue object?", "square", 0.0),                  # large
             ("exist", "a.png", "Is there a red circle in the image?", "yes", 1.0),                # small
             ("exist", "a.png", "Is there a green circle in the image?", "no", 1.0),               # no object
             ("reg", "a.png", "What is the object at [0.1,0.1,0.2,0.2]?", "a large blue square", 1.0),  # large
             ("rec", "a.png", "Give the bounding box of the red circle.", "[0,0,1,1]", 0.0),       # small
             ("count", "a.png", "How many objects are there?", "2", 1.0),                          # few
             ("count", "b.png", "How many objects are there?", "5", 0.0)]                          # many
    test = [{"id": str(i), "image": img, "task": t} for i, (t, img, *_rest) in enumerate(items)]
    (tmp_path / "test.json").write_text(json.dumps(test))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"id": str(i), "task": t, "prompt": q, "reference": ref,
                                                             "score": sc})
                                                 for i, (t, _, q, ref, sc) in enumerate(items)))
    groups = group_scores(tmp_path / "p.jsonl", tmp_path / "test.json", scenes)
    assert groups == {"small": {"score": pytest.approx(2 / 3), "n": 3}, "large": {"score": 0.5, "n": 2},
                      "many": {"score": 0.0, "n": 1}, "few": {"score": 1.0, "n": 1}}


def test_unseen_pair_group_by_hand(tmp_path):
    from vlbridge.arena.breakdown import group_scores
    scenes = {"a.png": [{"shape": "circle", "color": "red", "size": "small"},
                        {"shape": "square", "color": "blue", "size": "large"}]}
    items = [("color", "What color is the circle?", "red", 0.0),                  # about the red circle: unseen
             ("glyph", "What is written on the red circle?", "7", 1.0),           # unseen; no size group (glyph)
             ("shape", "What shape is the blue object?", "square", 1.0)]          # seen
    (tmp_path / "test.json").write_text(json.dumps([{"id": str(i), "image": "a.png", "task": t}
                                                    for i, (t, *_rest) in enumerate(items)]))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"id": str(i), "task": t, "prompt": q, "reference": ref,
                                                             "score": sc}) for i, (t, q, ref, sc) in enumerate(items)))
    groups = group_scores(tmp_path / "p.jsonl", tmp_path / "test.json", scenes, ["red circle"])
    assert groups["unseen"] == {"score": 0.5, "n": 2}
    assert groups["small"] == {"score": 0.0, "n": 1} and groups["large"] == {"score": 1.0, "n": 1}


def test_interval_and_paired_difference_by_hand():
    iv = interval([0.5, 0.6, 0.7])
    assert iv.mean == pytest.approx(0.6) and (iv.low, iv.high, iv.n) == (0.5, 0.7, 3)
    assert iv.half == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)       # t(0.975, 2) * sd / sqrt(n)
    assert interval([0.4]).half is None and interval([]) is None
    d = paired({0: 0.5, 1: 0.6, 2: 0.7, 3: 0.9}, {0: 0.4, 1: 0.45, 2: 0.62})   # seed 3 has no partner
    assert d.n == 3 and d.mean == pytest.approx((0.1 + 0.15 + 0.08) / 3)
    assert supported(d)                                                        # consistently above
    assert not supported(paired({0: 0.5, 1: 0.3, 2: 0.6}, {0: 0.4, 1: 0.45, 2: 0.5}))   # signs disagree
    assert not supported(paired({0: 0.9}, {0: 0.1}))                            # one seed supports nothing


def _results(per_row: dict[str, list[float]]) -> list[dict]:
    return [{"connector": row, "seed": seed, "visual_tokens": 16, "connector_params": 1,
             "metrics": {"color": {"main": "vqa_acc", "vqa_acc": v}}}
            for row, values in per_row.items() for seed, v in enumerate(values)]


def test_table_marks_differences_the_seeds_do_not_support():
    results = _results({"mlp": [0.80, 0.70, 0.90], "worse": [0.40, 0.32, 0.49], "same": [0.85, 0.60, 0.88]})
    md = table(results, {"metrics": {"color": {"main": "vqa_acc", "vqa_acc": 0.17}}}, ["color"], ())
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()}
    assert "| prior (no image) | - | 17.0 |" in md
    assert "80.0 ± 24.8 |" in lines["mlp"] and NOT_SUPPORTED not in lines["mlp"]
    assert NOT_SUPPORTED not in lines["worse"] and lines["same"].count(NOT_SUPPORTED) == 2      # colour and mean
    diff = difference_table(results, ["color"], ())
    assert "| worse | **-39.7 [" in diff and "| same | -2.3 [" in diff


def test_prior_answers_each_question_with_its_most_frequent_training_answer(tmp_path):
    def turn(q, a):
        return [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]
    train = [{"id": "a", "task": "mixed", "tasks": ["color", "count"],
              "conversations": turn("What color is the circle?", "red") + turn("How many circles are there?", "1")},
             {"id": "b", "task": "color", "conversations": turn("What color is the circle?", "red")},
             {"id": "c", "task": "color", "conversations": turn("What color is the square?", "blue")},
             {"id": "d", "task": "color", "conversations": turn("What color is the circle?", "green")}]
    test = [{"id": "1", "task": "color", "conversations": turn("What color is the circle?", "red")},
            {"id": "2", "task": "color", "conversations": turn("What color is the square?", "green")},
            {"id": "3", "task": "color", "conversations": turn("What color is the diamond?", "red")},   # unseen question
            {"id": "4", "task": "count", "conversations": turn("How many circles are there?", "2")}]
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "test.json").write_text(json.dumps(test))
    m = prior_metrics(tmp_path / "train.json", tmp_path / "test.json")
    # circle -> red (right), square -> blue (wrong), diamond -> the task's most frequent answer, red (right)
    assert m["color"]["vqa_acc"] == pytest.approx(2 / 3) and m["count"]["count_acc"] == 0.0
    only = prior_metrics(tmp_path / "train.json", tmp_path / "test.json", {"1", "2"})
    assert only["color"]["n"] == 2 and "count" not in only


def test_labelled_variants_start_from_their_connectors_options():
    cfg = ArenaConfig(connectors=["pargo", "pargo_aux=pargo", "mlp"],
                      connector_options={"pargo": {"layers": 3}, "pargo_aux": {"aux_weight": 0.1}})
    rows = parse_rows(cfg)
    assert [(r.label, r.connector, r.options) for r in rows] == [
        ("pargo", "pargo", {"layers": 3}), ("pargo_aux", "pargo", {"layers": 3, "aux_weight": 0.1}), ("mlp", "mlp", {})]
