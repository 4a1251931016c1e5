"""Run the arena: for each connector, train (or resume) and evaluate it, then write the comparison.

Layout of the run directory ``OUT``::

    arena.json               the resolved ArenaConfig
    data/  vision/           shared ShapesWorld data and frozen encoder (unless --data / --vision are given)
    configs/<name>.json      each connector's resolved run config (`vlbridge train --config` re-runs it)
    <name>/                  one dir per connector: run.json (its config), eval/, result.json (the marker of a
                             finished connector, written atomically after its eval) and one dir per stage:
      <pre_stage>/           the stage the connector declares it needs first (groma: det, lavit: tokenizer),
                             not counted in the step budget
      instruct/              the LLM stage (config.json, log.jsonl, checkpoints/, final/)
    arena.md  arena.csv      the table;  arena_tasks.png  arena_tokens.png  the plots

A connector with a ``result.json`` is not retrained; a finished stage is not rerun; an interrupted LLM stage
resumes from its latest checkpoint.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from ..config import ConnectorConfig, DataConfig, RunConfig, VisionConfig, save_json, validate
from ..connectors import CONNECTORS, build_connector
from ..data.records import SkipReport
from ..errors import UserError, unknown_name
from ..generate import GenerationConfig
from ..train.checkpoint import latest_checkpoint
from ..train.data import load_split, make_dataset
from .breakdown import group_scores, load_scenes
from .config import ArenaConfig
from .prepare import (as_saved, base_run_config, data_image_size, log, plain, prepare_data, prepare_vision,
                      require_same, sized_vision)

RESULT = "result.json"


def check_connectors(cfg: ArenaConfig) -> None:
    """Fail before any work on an unknown connector, a duplicate, or an option the connector does not have."""
    if not cfg.connectors:
        raise UserError("--connectors is empty: name at least one connector")
    twice = sorted({n for n in cfg.connectors if cfg.connectors.count(n) > 1})
    if twice:
        raise UserError(f"connector {twice[0]!r} is listed twice in --connectors")
    unknown = [n for n in list(cfg.connectors) + list(cfg.connector_options) if n not in CONNECTORS]
    if unknown:
        raise unknown_name("connector", unknown[0], CONNECTORS)
    for name, options in cfg.connector_options.items():
        if not isinstance(options, dict):
            raise UserError(f"--connector-options {name!r}: expected a JSON object of options, got {options!r}")
    from ..recipes.stages import check_schedule
    for stage, schedule in cfg.stage_schedules.items():
        if not isinstance(schedule, dict):
            raise UserError(f"--stage-schedules {stage!r}: expected a JSON object of settings, got {schedule!r}")
    for name in cfg.connectors:
        cls, options = CONNECTORS[name], cfg.connector_options.get(name, {})
        if set(options) - {f.name for f in dataclasses.fields(cls.Options)}:
            continue                                        # reported by dry_build_connectors, with the names
        stages = cls.stages(cls.Options(**options))
        for stage in connector_stages(name):
            if stage in cfg.stage_schedules:
                check_schedule(stages[stage], cfg.stage_schedules[stage])


def dry_build_connectors(cfg: ArenaConfig, base: RunConfig, image_size: int | None) -> None:
    """Build every connector once on the encoder's grid and the LLM's width, so a bad option value (a factor
    that does not divide the grid, a misspelt option) fails before the data and encoder are made."""
    from ..models.vision import VisionTower
    vision = sized_vision(base.model.vision, image_size)
    if cfg.vision:
        if not Path(cfg.vision).is_dir():
            raise UserError(f"--vision {cfg.vision} is not a directory")
        vision = dataclasses.replace(vision, name_or_path=cfg.vision, arch={})
    with torch.random.fork_rng():
        tower = VisionTower(vision)
        llm_dim = base.model.llm.arch.get("hidden_size") if not base.model.llm.name_or_path else None
        if llm_dim is None:
            from transformers import AutoConfig
            llm_dim = AutoConfig.from_pretrained(base.model.llm.name_or_path).get_text_config().hidden_size
        for name in cfg.connectors:
            try:
                build_connector(name, connector_options(cfg, name, vision), tower.out_dim, llm_dim, tower.grid)
            except (ValueError, TypeError) as e:
                raise UserError(f"connector {name!r} with options {cfg.connector_options.get(name, {})}: {e}") from e


def connector_options(cfg: ArenaConfig, name: str, vision: VisionConfig) -> dict:
    """The connector's options in the arena; an ``image_size`` option (a pixel decoder's) defaults to the encoder's."""
    options = dict(cfg.connector_options.get(name, {}))
    if "image_size" in {f.name for f in dataclasses.fields(CONNECTORS[name].Options)}:
        options.setdefault("image_size", vision.image_size)
    return options


def connector_stages(name: str) -> list[str]:
    """The stages a connector's row trains: its declared pre-stage (if any), then the LLM stage."""
    pre = CONNECTORS[name].pre_stage
    return ([pre] if pre else []) + ["instruct"]


def connector_run_config(cfg: ArenaConfig, base: RunConfig, name: str, data: Path, vision: str, out: Path) -> RunConfig:
    """The base config with this connector, the shared frozen encoder, data and schedule."""
    rc = copy.deepcopy(base)
    rc.model.connector = ConnectorConfig(name, connector_options(cfg, name, rc.model.vision))
    rc.model.vision.name_or_path = vision
    rc.model.vision.arch = {}                                  # the encoder comes from `vision`
    rc.data = dataclasses.replace(rc.data, path=str(data))
    tc = rc.train
    tc.stage, tc.train_vision, tc.init_from = "instruct", False, None
    tc.steps, tc.seed, tc.save_every, tc.eval_every = cfg.steps, cfg.seed, cfg.save_every, 0
    tc.batch_size = cfg.batch_size or tc.batch_size
    tc.lr = cfg.lr or tc.lr
    tc.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else min(tc.warmup_steps, cfg.steps // 10)
    tc.resume, tc.stop_after = False, None
    tc.stages = connector_stages(name)
    tc.stage_schedules = {s: dict(v) for s, v in cfg.stage_schedules.items() if s in tc.stages}
    rc.out = str(out / name)
    rc.preset = f"arena:{name}"
    return rc


def rerun_commands(config_file: Path, run: RunConfig, test_file: Path, limit: int | None) -> str:
    again = f"{run.out}-rerun"
    limit_flag = f" --limit {limit}" if limit else ""
    return (f"vlbridge train --config {config_file} --out {again} && "
            f"vlbridge eval --model {again}/{run.train.stages[-1]}/final --data {test_file}{limit_flag}")


def write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def train_tokens_per_s(log_file: Path) -> float | None:
    """The trainer's own tokens/s (average over its last invocation) from log.jsonl."""
    if not log_file.is_file():
        return None
    rates = [json.loads(line).get("tokens_per_s") for line in log_file.read_text().splitlines() if line.strip()]
    rates = [r for r in rates if r is not None]
    return rates[-1] if rates else None


def select_per_task(records, limit: int | None):
    """The first `limit` records of every task (the same records for every connector), grouped by task so
    that a generation batch of one-word answers stops after a few tokens instead of waiting for captions."""
    by_task: dict[str, list] = {}
    for r in records:
        kept = by_task.setdefault(r.task or "all", [])
        if limit is None or len(kept) < limit:
            kept.append(r)
    return [r for kept in by_task.values() for r in kept]


@torch.no_grad()
def mean_visual_tokens(model, dataset, n_images: int = 32) -> float:
    """Visual tokens per image actually produced (dynamic connectors vary per image)."""
    samples = [dataset[i] for i in range(min(n_images, len(dataset)))]
    pixels = [s.pixel_values for s in samples if s is not None and len(s.pixel_values)]
    if not pixels:
        return float(model.connector.num_tokens())
    out = model.encode_images(torch.cat(pixels))                   # tokens [n_img, M, D_llm]
    if out.lengths is None:
        return float(out.tokens.shape[1])
    return float(out.lengths.float().mean())


def train_stages(run: RunConfig) -> dict:
    """Train every stage of the connector's row (resuming or skipping what ran earlier); seconds and steps run
    here, per stage, and for the LLM stage its ms per step."""
    from ..recipes.stages import run_stages
    timing = {}
    for name in run.train.stages:
        stage_dir = Path(run.out) / name
        resume_from = latest_checkpoint(stage_dir / "checkpoints")
        start = json.loads((resume_from / "trainer_state.json").read_text())["trainer"]["step"] if resume_from else 0
        t0 = time.perf_counter()
        result = run_stages(run, run.train.stages[: run.train.stages.index(name) + 1], run.out)[-1]
        timing[name] = {"seconds": time.perf_counter() - t0, "start_step": start, "out": str(result.out)}
    return timing


def evaluate_connector(cfg: ArenaConfig, run: RunConfig, test_file: Path) -> dict:
    """Generate answers on the shared test records and score them with the eval runner."""
    from ..eval.runner import predict, summarize, write_reports
    from ..models.vlm import VLBridgeModel
    model = VLBridgeModel.from_pretrained(Path(run.out) / run.train.stages[-1] / "final")
    data_cfg = DataConfig(path=str(test_file))
    report = SkipReport()
    records = select_per_task(load_split(test_file, data_cfg, report), cfg.eval_limit)
    dataset = make_dataset(records, model, data_cfg, report, for_generation=True)
    t0 = time.perf_counter()
    preds = predict(model, dataset, cfg.eval_batch_size, GenerationConfig(max_new_tokens=cfg.max_new_tokens))
    seconds = time.perf_counter() - t0
    metrics = summarize(preds)
    eval_dir = Path(run.out) / "eval"
    write_reports(eval_dir, preds, metrics, report, len(records))
    scenes = load_scenes(test_file.parent)
    groups = group_scores(eval_dir / "predictions.jsonl", test_file, scenes) if scenes else {}
    return {"metrics": metrics, "groups": groups, "eval_records": len(preds), "eval_seconds": seconds,
            "eval_images_per_s": sum(len(r.images) for r in records) / max(seconds, 1e-9),
            "visual_tokens": mean_visual_tokens(model, dataset),
            "max_visual_tokens": model.connector.num_tokens(),
            "dynamic": bool(model.connector.dynamic),
            "connector_params": model.connector.num_parameters()}


def run_connector(cfg: ArenaConfig, run: RunConfig, out: Path, test_file: Path) -> dict:
    """Train + evaluate one connector unless its result.json already exists for this exact config."""
    name = run.model.connector.name
    run_dir = Path(run.out)
    wanted = plain(run)
    saved_cfg = run_dir / "run.json"
    if saved_cfg.is_file():
        saved = as_saved(RunConfig, json.loads(saved_cfg.read_text()))
        saved["train"].update(resume=False, stop_after=None)               # how it ran, not what it is
        require_same(saved, wanted, saved_cfg, f"a {name} run")
    config_file = out / "configs" / f"{name}.json"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    save_json(run, config_file)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_json(run, saved_cfg)
    result_file = run_dir / RESULT
    if result_file.is_file():
        log(f"{name}: finished earlier ({result_file}); not retrained")
        return json.loads(result_file.read_text())
    timing = train_stages(run)
    lm = timing[run.train.stages[-1]]
    steps_run = run.train.steps - lm["start_step"]
    log(f"{name}: evaluating on {test_file}")
    result = {"connector": name, "options": run.model.connector.options,
              "train_seconds": lm["seconds"], "train_steps_run": steps_run,
              "pre_stage_seconds": sum(v["seconds"] for k, v in timing.items() if k != run.train.stages[-1]),
              "stages": timing,
              "train_ms_per_step": 1000 * lm["seconds"] / steps_run if steps_run else None,
              "train_tokens_per_s": train_tokens_per_s(run_dir / run.train.stages[-1] / "log.jsonl"),
              **evaluate_connector(cfg, run, test_file),
              "config": str(config_file),
              "command": rerun_commands(config_file, run, test_file, cfg.eval_limit)}
    write_json_atomic(result_file, result)
    return result


def run_arena(cfg: ArenaConfig) -> list[dict]:
    """Everything: shared data and encoder, each connector trained and evaluated, then table and plots."""
    from .plots import write_plots
    from .report import write_table
    validate(cfg)
    check_connectors(cfg)
    base = base_run_config(cfg)
    out = Path(cfg.out)
    given = prepare_data(cfg, out) if cfg.data else None        # a given --data is checked before anything is written
    dry_build_connectors(cfg, base, data_image_size(given) if given else cfg.shapes.image_size)
    out.mkdir(parents=True, exist_ok=True)
    save_json(cfg, out / "arena.json")
    data = given or prepare_data(cfg, out)
    test_file = data / "test.json"
    base.model.vision = sized_vision(base.model.vision, data_image_size(data))
    vision = prepare_vision(cfg, base.model.vision, data, out)
    results = []
    for i, name in enumerate(cfg.connectors, 1):
        log(f"connector {i}/{len(cfg.connectors)}: {name}")
        run = connector_run_config(cfg, base, name, data, vision, out)
        results.append(run_connector(cfg, run, out, test_file))
    table = write_table(results, out)
    write_plots(results, out)
    log(f"wrote {out / 'arena.md'}, {out / 'arena.csv'} and plots")
    print(table)
    return results
