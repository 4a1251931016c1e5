"""`vlbridge eval` on a tiny model: batched predictions, per-task metrics, reports, and reproducibility."""
from __future__ import annotations

import json

import pytest

from vlbridge.cli.main import main
from vlbridge.eval.task_metrics import TASK_METRICS

FILES = ("predictions.jsonl", "metrics.json", "metrics.md")


@pytest.fixture(scope="module")
def saved_model(untied_tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "final"
    untied_tiny_model.save_pretrained(path)
    return path


def run_eval(model, data, out, *extra):
    return main(["eval", "--model", str(model), "--data", str(data), "--limit", "2", "--batch-size", "5",
                 "--max-new-tokens", "6", "--out", str(out), *extra])


def test_eval_reports_and_same_records_same_files(saved_model, shapes_dir, tmp_path):
    assert run_eval(saved_model, shapes_dir / "test.json", tmp_path / "a") == 0
    assert run_eval(saved_model, shapes_dir / "test.json", tmp_path / "b") == 0
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    preds = [json.loads(line) for line in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    tests = json.loads((shapes_dir / "test.json").read_text())
    assert {"id", "task", "prompt", "prediction", "reference", "score", "metric", "details"} <= set(preds[0])
    assert all(p["metric"] == TASK_METRICS[p["task"]] and isinstance(p["score"], float) for p in preds)
    by_id = {r["id"]: r for r in tests}
    assert all(p["reference"] == by_id[p["id"]]["conversations"][-1]["value"] for p in preds)

    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())["metrics"]
    tasks = {p["task"] for p in preds}
    assert set(metrics) == tasks | {"overall"}
    for task in tasks:
        m = metrics[task]
        assert m["metric"] == TASK_METRICS[task] and m["n"] == sum(p["task"] == task for p in preds) <= 2
        assert m[m["main"]] >= 0
    if "rec" in metrics:
        assert {"acc@0.5", "mean_iou", "unparsable"} <= set(metrics["rec"])
    if "caption" in metrics:
        assert {"cider", "bleu4", "rouge_l", "tokenizer"} <= set(metrics["caption"])
    table = (tmp_path / "a" / "metrics.md").read_text()
    assert table.startswith("| task | metric | score | other metrics | n |")
    assert all(f"| {task} |" in table for task in metrics)


def test_eval_record_metric_field(saved_model, shapes_dir, tmp_path):
    records = json.loads((shapes_dir / "test.json").read_text())
    colors = [r for r in records if r["task"] == "color"][:2]
    for r in colors:
        r["metric"] = "exact_match"
    data = tmp_path / "colors.json"
    data.write_text(json.dumps(colors))
    assert main(["eval", "--model", str(saved_model), "--data", str(data), "--image-folder", str(shapes_dir),
                 "--max-new-tokens", "3", "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert metrics["color"]["metric"] == "exact_match" and "vqa_acc" not in metrics["color"]


@pytest.mark.parametrize("change, message", [
    ({"metric": "bleu"}, "unknown metric 'bleu'"),
    ({"metric": "rec"}, "reference box unreadable"),
])
def test_eval_bad_metric_is_a_clear_error(saved_model, shapes_dir, tmp_path, capsys, change, message):
    records = json.loads((shapes_dir / "test.json").read_text())
    record = dict(next(r for r in records if r["task"] == "color"), **change)
    data = tmp_path / "bad.json"
    data.write_text(json.dumps([record]))
    assert main(["eval", "--model", str(saved_model), "--data", str(data), "--image-folder", str(shapes_dir),
                 "--max-new-tokens", "2", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and record["id"] in err


def test_record_eval_fields(tmp_path):
    from vlbridge.data.records import DataError, load_records
    conv = [{"from": "human", "value": "How many?"}, {"from": "gpt", "value": "2"}]
    good = {"id": "a", "conversations": conv, "metric": "vqa", "references": ["2", "two", "3"]}
    (tmp_path / "good.json").write_text(json.dumps([good]))
    rec, = load_records(tmp_path / "good.json")
    assert rec.metric == "vqa" and rec.references == ["2", "two", "3"]
    (tmp_path / "bad.json").write_text(json.dumps([dict(good, references="2")]))
    with pytest.raises(DataError, match="'a'.*\"references\" must be a non-empty list"):
        load_records(tmp_path / "bad.json")


def test_one_metric_per_task(tmp_path):
    from vlbridge.data.records import load_records
    from vlbridge.eval.runner import check_metrics
    conv = [{"from": "human", "value": "Color?"}, {"from": "gpt", "value": "red"}]
    rows = [{"id": "a", "task": "color", "conversations": conv},
            {"id": "b", "task": "color", "conversations": conv, "metric": "exact_match"}]
    (tmp_path / "mixed.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="'b'.*'exact_match' here but with 'vqa' in record 'a'"):
        check_metrics(load_records(tmp_path / "mixed.json"))
