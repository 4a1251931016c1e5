"""`vlbridge arena` on tiny models: tables, CSVs, plots and configs per (row, seed); seeds; the shifted test set;
the feature store; resume per (row, seed); labelled variants; early errors."""
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
from vlbridge.cli.main import main
from vlbridge.config import load_run_config, save_json

pytestmark = pytest.mark.slow          # end to end: subprocesses, several trainings

CONNECTORS = ("mlp", "linear")


def arena_argv(base_json, data, out, connectors=CONNECTORS, steps=3, extra=(), seeds="0"):
    return ["arena", "--base_config", str(base_json), "--data", str(data), "--out", str(out),
            "--connectors", ",".join(connectors), "--steps", str(steps), "--save_every", "2", "--seeds", seeds,
            "--vision_steps", "2", "--vision_attributes", "shape,color", "--eval_limit", "2",
            "--shift_n", "0", "--jobs", "1", *extra]       # in this process (where tests patch); extra may override


@pytest.fixture(scope="module")
def base_json(shapes_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "tiny.json"
    save_json(tiny_run_config(shapes_dir, "unused"), path)
    return path


@pytest.fixture(scope="module")
def finished(base_json, shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("arena") / "run"
    assert main(arena_argv(base_json, shapes_dir, out, seeds="0,1",              # two runs at a time
                           extra=("--shift_n", "12", "--shift_eval_limit", "2", "--jobs", "2", "--threads", "1"))) == 0
    return out


def test_two_connectors_two_seeds_write_tables_csvs_plots_and_configs(finished):
    md = (finished / "arena.md").read_text()
    runs = list(csv.DictReader((finished / "arena_runs.csv").open()))
    assert [(r["connector"], r["seed"]) for r in runs] == [("mlp", "0"), ("linear", "0"), ("mlp", "1"), ("linear", "1")]
    for r in runs:
        result = json.loads((finished / r["connector"] / f"seed{r['seed']}" / "result.json").read_text())
        assert float(r["visual_tokens"]) == 16                     # tiny encoder: 32 px / 8 px patches = 4x4
        assert int(r["connector_params"]) == result["connector_params"] > 0
        assert result["seed"] == int(r["seed"]) and "color" in result["metrics"]
        assert r["shift:color"] != ""                              # scored on the shifted test set too
    assert "| prior (no image) | - |" in md and "| mlp | 2 |" in md and "| linear | 2 |" in md
    assert "## Difference from mlp, seed by seed" in md and "## Held-out shifted test set" in md
    assert "Evaluation size: one run's score" in md and (finished / "prior" / "shift" / "predictions.jsonl").is_file()
    long = list(csv.DictReader((finished / "arena.csv").open()))
    color = {(r["test_set"], r["connector"]): r for r in long if r["column"] == "color"}
    assert color["test", "mlp"]["n"] == "2" and color["test", "prior"]["n"] == "0"
    assert color["test", "linear"]["diff_supported"] in ("True", "False") and ("shift", "linear") in color
    for png in ("arena_tasks.png", "arena_tokens.png", "arena_params.png"):
        with Image.open(finished / png) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    # the runs differ in the connector, seed and where they live, nothing else (same encoder, data, schedule)
    a = load_run_config(finished / "configs" / "mlp-seed0.json")
    assert a.model.vision.name_or_path == str(finished / "vision") and not a.train.train_vision
    assert a.train.vision_feature_store == str(finished / "features")
    diff = differences(json.loads((finished / "configs/mlp-seed0.json").read_text()),
                       json.loads((finished / "configs/linear-seed1.json").read_text()))
    assert {d.split(":")[0] for d in diff} == {"model.connector.name", "out", "preset", "train.seed"}
    # the two seeds trained different models
    w0, w1 = (load_file(finished / "mlp" / f"seed{k}" / "instruct" / "final" / "model.safetensors") for k in (0, 1))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


def test_features_are_encoded_once_for_every_run(finished):
    """One encoder, so one folder of features on disk, one file per image the runs saw; every run after the
    first read them (its training log says so)."""
    folders = list((finished / "features").iterdir())
    assert len(folders) == 1 and len(list(folders[0].glob("*.safetensors"))) > 0


def test_a_second_comparison_in_the_same_dir_trains_only_its_new_rows(base_json, shapes_dir, finished, monkeypatch):
    """--name keeps another table beside the first; a row both list (mlp) is not retrained; a labelled variant
    (wide=linear) trains in its own dirs."""
    real_train, calls = stages_module.train, []

    def counting(cfg, overwrite=False):
        calls.append(cfg.out)
        return real_train(cfg)

    monkeypatch.setattr(stages_module, "train", counting)
    assert main(arena_argv(base_json, shapes_dir, finished, connectors=("mlp", "wide=linear"), seeds="0,1",
                           extra=("--shift_n", "12", "--shift_eval_limit", "2", "--name", "variants"))) == 0
    assert sorted(calls) == [str(finished / "wide" / f"seed{k}" / "instruct") for k in (0, 1)]
    md = (finished / "variants.md").read_text()
    assert "| mlp | 2 |" in md and "| wide | 2 |" in md and "| linear |" not in md
    assert (finished / "arena.md").is_file() and (finished / "variants_tasks.png").is_file()


def test_a_run_reruns_alone_from_its_saved_config(finished, tmp_path):
    again = tmp_path / "again"
    assert main(["train", "--config", str(finished / "configs" / "mlp-seed1.json"), "--out", str(again)]) == 0
    original = load_file(finished / "mlp" / "seed1" / "instruct" / "final" / "model.safetensors")
    rerun = load_file(again / "instruct" / "final" / "model.safetensors")
    assert original.keys() == rerun.keys()
    assert all(torch.equal(original[k], rerun[k]) for k in original)


def test_resume_skips_finished_and_continues_unfinished(base_json, shapes_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_train, calls = stages_module.train, []

    def killed_after_two_steps(cfg, overwrite=False):                 # "linear" is killed at step 2, after its checkpoint
        if cfg.model.connector.name == "linear":
            cfg.train.stop_after = 2
            real_train(cfg)
            raise RuntimeError("killed")
        return real_train(cfg)

    monkeypatch.setattr(stages_module, "train", killed_after_two_steps)
    with pytest.raises(RuntimeError, match="killed"):
        runner.run_arena(_config(base_json, shapes_dir, out, steps=4))
    done = out / "mlp" / "seed0" / "result.json"
    assert done.is_file() and not (out / "linear" / "seed0" / "result.json").exists()
    stamp = done.stat().st_mtime_ns

    def counting(cfg, overwrite=False):
        calls.append((cfg.model.connector.name, cfg.train.seed, cfg.train.resume))
        return real_train(cfg)

    monkeypatch.setattr(stages_module, "train", counting)
    saved = json.loads((out / "mlp" / "seed0" / "run.json").read_text())   # as written by an older vlbridge that
    del saved["train"]["num_workers"]                                      # lacked a field (now at its default)
    (out / "mlp" / "seed0" / "run.json").write_text(json.dumps(saved))
    assert main(arena_argv(base_json, shapes_dir, out, steps=4, seeds="0,1")) == 0
    # seed 0: mlp not retrained, linear resumed; seed 1 (new) trains both from scratch
    assert calls == [("linear", 0, True), ("mlp", 1, False), ("linear", 1, False)]
    assert done.stat().st_mtime_ns == stamp
    steps = [json.loads(x)["step"] for x in (out / "linear" / "seed0" / "instruct" / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == [1, 2, 3, 4]                               # each step trained exactly once
    assert json.loads((out / "linear" / "seed0" / "result.json").read_text())["train_steps_run"] == 2
    assert len(list(csv.DictReader((out / "arena_runs.csv").open()))) == 4


def _config(base_json, data, out, steps):
    from vlbridge.arena.config import ArenaConfig
    return ArenaConfig(connectors=list(CONNECTORS), base_config=str(base_json), data=str(data), out=str(out),
                       steps=steps, save_every=2, vision_steps=2, vision_attributes=["shape", "color"], eval_limit=2,
                       seeds=[0], shift_n=0)


def test_changed_settings_in_the_same_dir_are_an_error(base_json, shapes_dir, finished, capsys):
    assert main(arena_argv(base_json, shapes_dir, finished, steps=5)) == 2
    err = capsys.readouterr().err
    assert "train.steps: 3 -> 5" in err and "another --out" in err


@pytest.mark.parametrize("flags, message", [
    (["--connectors", "mlp,nope"], "unknown connector 'nope'; choose from"),
    (["--connectors", "mlp,mlp"], "listed twice"),
    (["--connector_options", '{"mlp": {"bogus": 1}}'], "connector 'mlp' has no option(s) ['bogus']"),
    (["--connectors", "mlp,pixel_shuffle", "--connector_options", '{"pixel_shuffle": {"factor": 3}}'],
     "not divisible by factor 3"),                              # the 8x8 grid of the preset's encoder
])
def test_bad_connector_fails_before_any_work(flags, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(stages_module, "train", lambda cfg, overwrite=False: pytest.fail("training started"))
    out = tmp_path / "run"
    assert main(["arena", "--out", str(out), "--shapes.n", "10", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()                                    # no data generated, no encoder pretrained


def test_help_and_print_config_show_the_preset(capsys):
    with pytest.raises(SystemExit) as e:
        main(["arena", "--help"])
    assert e.value.code == 0 and "--max-objects" in capsys.readouterr().out
    assert main(["arena", "--print-config", "--steps", "7", "--max-objects", "5", "--glyph-scale", "2"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["preset"] == "arena-cpu" and cfg["steps"] == 7
    assert cfg["shapes"]["max_objects"] == 5 and cfg["shapes"]["glyph_scale"] == 2
    # options for every default connector, plus groma's and lavit's (rows when listed: `--connectors mlp,groma`)
    assert set(cfg["connector_options"]) <= set(cfg["connectors"]) | {"groma", "lavit", "lion", "emu"}


def test_the_long_preset_is_arena_cpu_with_more_steps(capsys):
    """Its runs compare with arena-cpu's: the same data, encoder, rows, options and evaluation; only the step
    budget (and the checkpoint spacing) differs."""
    configs = {}
    for preset in ("arena-cpu", "arena-long"):
        assert main(["arena", "--preset", preset, "--print-config"]) == 0
        configs[preset] = json.loads(capsys.readouterr().out)
    cpu, long = configs["arena-cpu"], configs["arena-long"]
    assert long["steps"] == 4 * cpu["steps"]
    differing = {k for k in cpu if cpu[k] != long[k]}
    assert differing == {"steps", "save_every", "preset"}


def test_region_token_connector_gets_its_det_stage_then_an_arena_row(base_json, shapes_dir, tmp_path):
    out = tmp_path / "run"
    schedules = json.dumps({"det": {"steps": 2, "warmup_steps": 1}})
    assert main(arena_argv(base_json, shapes_dir, out, connectors=("groma",), extra=("--stage_schedules", schedules))) == 0
    det = out / "groma" / "seed0" / "det"
    assert (det / "final" / "model.safetensors").is_file() and (det / "det_metrics.json").is_file()
    assert len((det / "log.jsonl").read_text().splitlines()) == 2         # the schedule reached the det stage
    run = load_run_config(out / "configs" / "groma-seed0.json")
    assert run.train.stages == ["det", "instruct"]
    # the LLM stage started from the trained proposer, and left it frozen
    trained = load_file(det / "final" / "model.safetensors")
    final = load_file(out / "groma" / "seed0" / "instruct" / "final" / "model.safetensors")
    proposer = [k for k in trained if ".proposer." in k]
    assert proposer and all(torch.equal(trained[k], final[k]) for k in proposer)
    result = json.loads((out / "groma" / "seed0" / "result.json").read_text())
    assert result["pre_stage_seconds"] > 0 and "rec" in result["metrics"]
    rows = list(csv.DictReader((out / "arena_runs.csv").open()))
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
    tok = out / "lavit" / "seed0" / "tokenizer"
    assert (tok / "metrics.json").is_file()
    run = load_run_config(out / "configs" / "lavit-seed0.json")
    assert run.train.stages == ["tokenizer", "instruct"] and run.model.connector.options["codebook_size"] == 16
    trained = load_file(tok / "model.safetensors")
    final = load_file(out / "lavit" / "seed0" / "instruct" / "final" / "model.safetensors")
    assert all(torch.equal(v, final[f"connector.visual_tokenizer.{k}"]) for k, v in trained.items())
    result = json.loads((out / "lavit" / "seed0" / "result.json").read_text())
    assert result["pre_stage_seconds"] > 0 and result["dynamic"] and "color" in result["metrics"]


def test_unknown_tokenizer_stage_field_fails_before_any_work(base_json, shapes_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(arena_argv(base_json, shapes_dir, out, connectors=("lavit",),
                           extra=("--stage_schedules", '{"tokenizer": {"steps_quantised": 3}}'))) != 0
    assert "steps_quantised" in capsys.readouterr().err and not out.exists()


def test_a_lion_row_through_its_declared_hooks(base_json, shapes_dir, tmp_path):
    """lion in the arena: its encoder layers, instruction text and adapters inside the LLM come from its hooks."""
    options = {"lion": {"qformer": {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "num_queries": 2},
                        "aggregator_heads": 2, "adapter_bottleneck": 4}}
    out = tmp_path / "run"
    assert main(arena_argv(base_json, shapes_dir, out, connectors=("lion",), steps=2,
                           extra=("--connector_options", json.dumps(options)))) == 0
    result = json.loads((out / "lion" / "seed0" / "result.json").read_text())
    assert result["max_visual_tokens"] == 2 + 16 and result["eval_records"] > 0
    weights = load_file(str(out / "lion" / "seed0" / "instruct" / "final" / "model.safetensors"))
    assert any(".moa_adapters.1." in k for k in weights) and any(k.startswith("connector.aggregator") for k in weights)


def test_an_emu_row_through_its_declared_hooks(base_json, shapes_dir, tmp_path):
    """emu in the arena: chat records produce no image, so it trains as a reader (its regression hook stays idle)
    and is scored like every row; its wrap tokens come from its hooks."""
    options = {"emu": {"num_queries": 3, "layers": 1, "hidden": 16, "heads": 2, "decoder_width": 16,
                       "decoder_channels": [8, 8, 8]}}
    out = tmp_path / "run"
    assert main(arena_argv(base_json, shapes_dir, out, connectors=("emu",), steps=2,
                           extra=("--connector_options", json.dumps(options)))) == 0
    result = json.loads((out / "emu" / "seed0" / "result.json").read_text())
    assert result["max_visual_tokens"] == 3 and result["eval_records"] > 0
    log = [json.loads(x) for x in (out / "emu" / "seed0" / "instruct" / "log.jsonl").read_text().splitlines()]
    assert all("regression" not in x for x in log if "loss" in x)      # nothing produced, nothing regressed
