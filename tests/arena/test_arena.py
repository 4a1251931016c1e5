"""`vlbridge arena` on tiny models: table, CSV, plots and configs; resume; early errors; the table's arithmetic."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vlbridge.arena.runner as runner
import vlbridge.recipes.stages as stages_module
from support import tiny_run_config
from vlbridge.arena.prepare import differences
from vlbridge.arena.report import headline, summary_scores
from vlbridge.cli.main import main
from vlbridge.config import load_run_config, save_json

pytestmark = pytest.mark.slow          # end to end: subprocesses, several trainings

CONNECTORS = ("mlp", "linear")


def arena_argv(base_json, data, out, connectors=CONNECTORS, steps=3, extra=()):
    return ["arena", "--base_config", str(base_json), "--data", str(data), "--out", str(out),
            "--connectors", ",".join(connectors), "--steps", str(steps), "--save_every", "2",
            "--vision_steps", "2", "--vision_attributes", "shape,color", "--eval_limit", "2", *extra]


@pytest.fixture(scope="module")
def base_json(shapes_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "tiny.json"
    save_json(tiny_run_config(shapes_dir, "unused"), path)
    return path


@pytest.fixture(scope="module")
def finished(base_json, shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("arena") / "run"
    assert main(arena_argv(base_json, shapes_dir, out)) == 0
    return out


def test_two_connectors_write_table_csv_plots_and_configs(finished):
    md = (finished / "arena.md").read_text()
    rows = list(csv.DictReader((finished / "arena.csv").open()))
    assert [r["connector"] for r in rows] == list(CONNECTORS)
    for r in rows:
        result = json.loads((finished / r["connector"] / "result.json").read_text())
        assert f"| {r['connector']} |" in md
        assert float(r["visual_tokens"]) == 16                     # tiny encoder: 32 px / 8 px patches = 4x4
        assert int(r["connector_params"]) == result["connector_params"] > 0
        assert float(r["train_tokens_per_s"]) > 0 and float(r["eval_images_per_s"]) > 0
        assert any(k.startswith("color:") for k in r) and "mean" in r and "fine" in r
    for png in ("arena_tasks.png", "arena_tokens.png"):
        with Image.open(finished / png) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    # the two runs differ in the connector and where they live, nothing else (same encoder, data, schedule)
    a, b = (load_run_config(finished / "configs" / f"{c}.json") for c in CONNECTORS)
    assert a.model.vision.name_or_path == str(finished / "vision") and not a.train.train_vision
    diff = differences(json.loads((finished / "configs/mlp.json").read_text()),
                       json.loads((finished / "configs/linear.json").read_text()))
    assert {d.split(":")[0] for d in diff} == {"model.connector.name", "out", "preset"}


def test_a_row_reruns_alone_from_its_saved_config(finished, tmp_path):
    again = tmp_path / "again"
    assert main(["train", "--config", str(finished / "configs" / "mlp.json"), "--out", str(again)]) == 0
    original = load_file(finished / "mlp" / "instruct" / "final" / "model.safetensors")
    rerun = load_file(again / "instruct" / "final" / "model.safetensors")
    assert original.keys() == rerun.keys()
    assert all(torch.equal(original[k], rerun[k]) for k in original)


def test_resume_skips_finished_and_continues_unfinished(base_json, shapes_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_train, calls = stages_module.train, []

    def killed_after_two_steps(cfg):                 # "linear" is killed at step 2, after its checkpoint
        if cfg.model.connector.name == "linear":
            cfg.train.stop_after = 2
            real_train(cfg)
            raise RuntimeError("killed")
        return real_train(cfg)

    monkeypatch.setattr(stages_module, "train", killed_after_two_steps)
    with pytest.raises(RuntimeError, match="killed"):
        runner.run_arena(_config(base_json, shapes_dir, out, steps=4))
    done = out / "mlp" / "result.json"
    assert done.is_file() and not (out / "linear" / "result.json").exists()
    stamp = done.stat().st_mtime_ns

    def counting(cfg):
        calls.append((cfg.model.connector.name, cfg.train.resume))
        return real_train(cfg)

    monkeypatch.setattr(stages_module, "train", counting)
    saved = json.loads((out / "mlp" / "run.json").read_text())          # as written by an older vlbridge that
    del saved["train"]["num_workers"]                                   # lacked a field (now at its default)
    (out / "mlp" / "run.json").write_text(json.dumps(saved))
    assert main(arena_argv(base_json, shapes_dir, out, steps=4)) == 0
    assert calls == [("linear", True)]                         # mlp not retrained; linear resumed
    assert done.stat().st_mtime_ns == stamp
    steps = [json.loads(x)["step"] for x in (out / "linear" / "instruct" / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == [1, 2, 3, 4]                               # each step trained exactly once
    assert json.loads((out / "linear" / "result.json").read_text())["train_steps_run"] == 2
    assert len(list(csv.DictReader((out / "arena.csv").open()))) == 2


def _config(base_json, data, out, steps):
    from vlbridge.arena.config import ArenaConfig
    return ArenaConfig(connectors=list(CONNECTORS), base_config=str(base_json), data=str(data), out=str(out),
                       steps=steps, save_every=2, vision_steps=2, vision_attributes=["shape", "color"], eval_limit=2)


def test_changed_settings_in_the_same_dir_are_an_error(base_json, shapes_dir, finished, capsys):
    assert main(arena_argv(base_json, shapes_dir, finished, steps=5)) == 2
    err = capsys.readouterr().err
    assert "train.steps: 3 -> 5" in err and "another --out" in err


@pytest.mark.parametrize("flags, message", [
    (["--connectors", "mlp,nope"], "connectors: unknown value 'nope'; choose from"),
    (["--connectors", "mlp,mlp"], "listed twice"),
    (["--connector_options", '{"mlp": {"bogus": 1}}'], "connector 'mlp' has no option(s) ['bogus']"),
    (["--connectors", "mlp,pixel_shuffle", "--connector_options", '{"pixel_shuffle": {"factor": 3}}'],
     "not divisible by factor 3"),                              # the 8x8 grid of the preset's encoder
])
def test_bad_connector_fails_before_any_work(flags, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(stages_module, "train", lambda cfg: pytest.fail("training started"))
    out = tmp_path / "run"
    assert main(["arena", "--out", str(out), "--shapes.n", "10", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()                                    # no data generated, no encoder pretrained


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
    assert s["fine"] == pytest.approx((1.0 + 0.25 + 0.75) / 3)                    # glyph, count, rec


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


def test_help_and_print_config_show_the_preset(capsys):
    with pytest.raises(SystemExit) as e:
        main(["arena", "--help"])
    assert e.value.code == 0 and "--max-objects" in capsys.readouterr().out
    assert main(["arena", "--print-config", "--steps", "7", "--max-objects", "5", "--glyph-scale", "2"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["preset"] == "arena-cpu" and cfg["steps"] == 7
    assert cfg["shapes"]["max_objects"] == 5 and cfg["shapes"]["glyph_scale"] == 2
    # options for every default connector, plus groma's and lavit's (rows when listed: `--connectors mlp,groma`)
    assert set(cfg["connector_options"]) <= set(cfg["connectors"]) | {"groma", "lavit"}


def test_region_token_connector_gets_its_det_stage_then_an_arena_row(base_json, shapes_dir, tmp_path):
    out = tmp_path / "run"
    schedules = json.dumps({"det": {"steps": 2, "warmup_steps": 1}})
    assert main(arena_argv(base_json, shapes_dir, out, connectors=("groma",), extra=("--stage_schedules", schedules))) == 0
    det = out / "groma" / "det"
    assert (det / "final" / "model.safetensors").is_file() and (det / "det_metrics.json").is_file()
    assert len((det / "log.jsonl").read_text().splitlines()) == 2         # the schedule reached the det stage
    run = load_run_config(out / "configs" / "groma.json")
    assert run.train.stages == ["det", "instruct"]
    # the LLM stage started from the trained proposer, and left it frozen
    trained = load_file(det / "final" / "model.safetensors")
    final = load_file(out / "groma" / "instruct" / "final" / "model.safetensors")
    proposer = [k for k in trained if ".proposer." in k]
    assert proposer and all(torch.equal(trained[k], final[k]) for k in proposer)
    result = json.loads((out / "groma" / "result.json").read_text())
    assert result["pre_stage_seconds"] > 0 and "rec" in result["metrics"]
    rows = list(csv.DictReader((out / "arena.csv").open()))
    assert [r["connector"] for r in rows] == ["groma"] and float(rows[0]["visual_tokens"]) >= 16


def test_tokenizer_connector_gets_its_tokenizer_stage_then_an_arena_row(base_json, shapes_dir, tmp_path):
    """lavit: the visual tokenizer trains first (its own stage, on the arena's scenes and encoder), then the LLM
    stage builds the model around it and leaves it frozen."""
    out = tmp_path / "run"
    options = {"lavit": {"codebook_size": 16, "heads": 2, "merger_layers": 1, "decoder_layers": 1, "width": 32,
                         "pixel_channels": [8, 8, 8]}}
    stage = {"steps_continuous": 2, "steps_quantized": 2, "steps_pixels": 1, "batch_size": 4, "ratio_warmup": 1,
             "kmeans_images": 8}
    assert main(arena_argv(base_json, shapes_dir, out, connectors=("lavit",),
                           extra=("--connector_options", json.dumps(options),
                                  "--stage_schedules", json.dumps({"tokenizer": stage})))) == 0
    tok = out / "lavit" / "tokenizer"
    assert (tok / "metrics.json").is_file()
    run = load_run_config(out / "configs" / "lavit.json")
    assert run.train.stages == ["tokenizer", "instruct"] and run.model.connector.options["codebook_size"] == 16
    trained = load_file(tok / "model.safetensors")
    final = load_file(out / "lavit" / "instruct" / "final" / "model.safetensors")
    assert all(torch.equal(v, final[f"connector.visual_tokenizer.{k}"]) for k, v in trained.items())
    result = json.loads((out / "lavit" / "result.json").read_text())
    assert result["pre_stage_seconds"] > 0 and result["dynamic"] and "color" in result["metrics"]


def test_unknown_tokenizer_stage_field_fails_before_any_work(base_json, shapes_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(arena_argv(base_json, shapes_dir, out, connectors=("lavit",),
                           extra=("--stage_schedules", '{"tokenizer": {"steps_quantised": 3}}'))) != 0
    assert "steps_quantised" in capsys.readouterr().err and not out.exists()
