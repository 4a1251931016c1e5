"""Bad input end to end: over-long sequences, skip-with-count vs stop-at-first in training and eval, and the
CLI's one-line errors (no tracebacks). Record-level cases (missing/unreadable images, modes, bombs, path
escapes, placeholders, conversations) are covered one by one in test_records.py."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from support import tiny_run_config
from vlbridge.cli.main import main
from vlbridge.data.records import DataError, SkipReport, load_records
from vlbridge.train.data import make_dataset
from vlbridge.train.trainer import train


def bad_copy(shapes_dir, tmp_path):
    """A copy of the tiny dataset with one record of each kind of problem added to train.json."""
    data = tmp_path / "data"
    shutil.copytree(shapes_dir, data)
    records = json.loads((data / "train.json").read_text())
    good = records[0]
    Image.new("RGBA", (32, 32), (255, 0, 0, 0)).save(data / "images" / "rgba.png")
    (data / "images" / "broken.png").write_bytes(b"not a png")
    bad = [
        {"id": "missing", "image": "images/nope.png", "conversations": good["conversations"]},
        {"id": "unreadable", "image": "images/broken.png", "conversations": good["conversations"]},
        {"id": "escape", "image": "../outside.png", "conversations": good["conversations"]},
        {"id": "two-placeholders", "image": good["image"],
         "conversations": [{"from": "human", "value": "<image><image> hi"}, {"from": "gpt", "value": "x"}]},
        {"id": "empty", "image": good["image"], "conversations": []},
        {"id": "too-long", "image": good["image"],
         "conversations": [{"from": "human", "value": "<image>\n" + "red " * 700}, {"from": "gpt", "value": "x"}]},
        {"id": "rgba", "image": "images/rgba.png", "conversations": good["conversations"]},
    ]
    (data / "train.json").write_text(json.dumps(records + bad))
    return data, len(records)


def test_training_skips_and_reports_bad_records(shapes_dir, tmp_path, capsys):
    data, n_good = bad_copy(shapes_dir, tmp_path)
    cfg = tiny_run_config(data, tmp_path / "run", steps=2)
    train(cfg)
    err = capsys.readouterr().err
    assert "skipped 6 of" in err
    lines = [json.loads(x) for x in (tmp_path / "run" / "skipped_records.jsonl").read_text().splitlines()]
    kinds = {x["id"]: x["kind"] for x in lines}
    assert kinds == {"missing": "missing_image", "unreadable": "unreadable_image", "escape": "path_escape",
                     "two-placeholders": "placeholders", "empty": "empty_conversation", "too-long": "too_long"}
    assert "rgba" not in kinds                                    # converted deliberately, not dropped


def test_training_stops_at_first_bad_record_when_asked(shapes_dir, tmp_path):
    data, _ = bad_copy(shapes_dir, tmp_path)
    cfg = tiny_run_config(data, tmp_path / "run", steps=2)
    cfg.data.on_bad_record = "error"
    with pytest.raises(DataError, match="missing"):
        train(cfg)


def test_too_long_names_record_and_limit(shapes_dir, tmp_path, tiny_model):
    data, _ = bad_copy(shapes_dir, tmp_path)
    from vlbridge.config import DataConfig
    report = SkipReport()
    records = load_records(data / "train.json", on_error="skip", report=report)
    cfg = DataConfig(on_bad_record="error")
    with pytest.raises(DataError) as e:
        make_dataset([r for r in records if r.id == "too-long"], tiny_model, cfg, report)
    msg = str(e.value)
    assert "too-long" in msg and "exceeds the model's limit of 512" in msg and e.value.kind == "too_long"


def test_cli_reports_bad_data_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "a", "conversations": [}')
    model = tmp_path / "model"
    model.mkdir()
    assert main(["eval", "--model", str(model), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not a vlbridge model directory" in err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nowhere" in err and "does not exist" in err
