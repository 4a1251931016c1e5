"""Stages as data, run in sequence: hand-offs, finished stages skipped, schedules checked before any work."""
import json

import pytest

from support import groma_config, tiny_run_config
from vlbridge.config import RunConfig, TrainConfig
from vlbridge.recipes import stages as stages_module
from vlbridge.recipes.stages import check_schedule, declared_stage, run_stages


def test_a_connector_declares_its_stages_and_the_run_picks_them(tmp_path):
    cfg = RunConfig(model=groma_config(), train=TrainConfig(stage="det"), out=str(tmp_path))
    assert declared_stage(cfg).runner == "det"
    cfg.train.stage = "align"
    assert declared_stage(cfg).frozen == ("connector.proposer",)
    mlp = tiny_run_config(tmp_path, tmp_path / "x")
    mlp.train.stage = "det"
    with pytest.raises(ValueError, match="has no stage 'det'"):
        declared_stage(mlp)


def test_stages_run_in_order_hand_off_and_skip_what_finished(shapes_dir, tmp_path, monkeypatch):
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=2)
    cfg.train.train_vision = False
    cfg.train.stages = ["align", "instruct"]
    cfg.train.stage_schedules = {"align": {"steps": 1}}
    results = run_stages(cfg)
    align, instruct = tmp_path / "run" / "align", tmp_path / "run" / "instruct"
    assert [r.out for r in results] == [align / "final", instruct / "final"]
    assert json.loads((instruct / "config.json").read_text())["train"]["init_from"] == str(align / "final")
    rows = [json.loads(x) for x in (align / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1]                                         # the schedule reached the align stage
    calls = []
    monkeypatch.setattr(stages_module, "train", lambda c: calls.append(c) or pytest.fail("retrained"))
    assert [r.out for r in run_stages(cfg)] == [align / "final", instruct / "final"]   # both finished: skipped


def test_a_schedule_field_the_runner_lacks_is_an_error(tmp_path):
    cfg = RunConfig(model=groma_config(), train=TrainConfig(stage="det"), out=str(tmp_path))
    with pytest.raises(ValueError, match="unknown schedule field"):
        check_schedule(declared_stage(cfg), {"stepz": 3})
    cfg.train.stages, cfg.train.stage_schedules = ["det"], {"instruct": {"steps": 1}}
    with pytest.raises(ValueError, match="not run"):
        run_stages(cfg)
