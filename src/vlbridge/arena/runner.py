"""Run the arena: for each seed and row, train (or resume) and evaluate, then write the comparison.

Layout of the run directory ``OUT``::

    <name>.json              the resolved ArenaConfig (``--name``, default "arena")
    data/  data_shift/       shared ShapesWorld data and the held-out shifted test set
    vision/  features/       the frozen encoder (unless --vision is given) and its features on disk
    <name>_prior.json        the blind prior's scores (``prior.py``) on both test sets
    configs/<row>-seed<k>.json   each run's resolved config (`vlbridge train --config` re-runs it)
    <row>/seed<k>/           one dir per row and seed: run.json (its config), eval/, eval_shift/, result.json
                             (the marker of a finished run, written atomically after its evals) and one dir per
                             stage: the connector's pre-stage if it declares one (groma: det, lavit: tokenizer;
                             not counted in the step budget), then instruct/ (config.json, log.jsonl,
                             checkpoints/, final/)
    <name>.md  <name>.csv  <name>_runs.csv  <name>_timing.json    the tables and the wall time of each part
    <name>_tasks.png  <name>_tokens.png  <name>_params.png        the plots (95% intervals over seeds)

Seeds run in the outer loop, so a partly finished arena already holds every row for its first seeds. A run
with a ``result.json`` is not retrained; a finished stage is not rerun; an interrupted LLM stage resumes from
its latest checkpoint.
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
from .config import ArenaConfig, Row, parse_rows
from .prepare import (as_saved, base_run_config, data_image_size, data_shapes, log, plain, prepare_data, prepare_shift,
                      prepare_vision, require_same, sized_vision)

RESULT = "result.json"


def check_rows(cfg: ArenaConfig) -> list[Row]:
    """The rows, failing before any work on an unknown connector, a duplicate label, or a bad option."""
    if not cfg.connectors:
        raise UserError("--connectors is empty: name at least one connector")
    if not cfg.seeds:
        raise UserError("--seeds is empty: give at least one training seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise UserError(f"--seeds {cfg.seeds} lists a seed twice")
    try:
        rows = parse_rows(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    labels = [r.label for r in rows]
    twice = sorted({n for n in labels if labels.count(n) > 1})
    if twice:
        raise UserError(f"connector {twice[0]!r} is listed twice in --connectors")
    unknown = [n for n in [r.connector for r in rows] if n not in CONNECTORS]
    unknown += [n for n in cfg.connector_options if n not in CONNECTORS and n not in labels]
    if unknown:
        raise unknown_name("connector", unknown[0], CONNECTORS)
    for name, options in cfg.connector_options.items():
        if not isinstance(options, dict):
            raise UserError(f"--connector-options {name!r}: expected a JSON object of options, got {options!r}")
    from ..recipes.stages import check_schedule
    for stage, schedule in cfg.stage_schedules.items():
        if not isinstance(schedule, dict):
            raise UserError(f"--stage-schedules {stage!r}: expected a JSON object of settings, got {schedule!r}")
    for row in rows:
        cls = CONNECTORS[row.connector]
        if set(row.options) - {f.name for f in dataclasses.fields(cls.Options)}:
            continue                                        # reported by dry_build_connectors, with the names
        stages = cls.stages(cls.Options(**row.options))
        for stage in connector_stages(row.connector):
            if stage in cfg.stage_schedules:
                check_schedule(stages[stage], cfg.stage_schedules[stage])
    return rows


def dry_build_connectors(cfg: ArenaConfig, rows: list[Row], base: RunConfig, image_size: int | None) -> dict[str, dict]:
    """Build every row's connector once on the encoder's grid and the LLM's width, so a bad option value (a factor
    that does not divide the grid, a misspelt option) fails before the data and encoder are made. Returns each
    row's size: {label: {"params", "flops", "tokens"}} (connector parameters, forward FLOPs per image, the
    most visual tokens per image)."""
    from ..models.vision import VisionTower
    vision = sized_vision(base.model.vision, image_size)
    if cfg.vision:
        if not Path(cfg.vision).is_dir():
            raise UserError(f"--vision {cfg.vision} is not a directory")
        vision = dataclasses.replace(vision, name_or_path=cfg.vision, arch={})
    sizes = {}
    with torch.random.fork_rng():
        tower = VisionTower(vision)
        llm_dim = base.model.llm.arch.get("hidden_size") if not base.model.llm.name_or_path else None
        if llm_dim is None:
            from transformers import AutoConfig
            llm_dim = AutoConfig.from_pretrained(base.model.llm.name_or_path).get_text_config().hidden_size
        for row in rows:
            try:
                c = build_connector(row.connector, connector_options(row, vision), tower.out_dim, llm_dim, tower.grid)
            except (ValueError, TypeError) as e:
                raise UserError(f"connector {row.label!r} with options {row.options}: {e}") from e
            sizes[row.label] = {"params": c.num_parameters(), "flops": c.flops(1), "tokens": c.num_tokens()}
    return sizes


def connector_options(row: Row, vision: VisionConfig) -> dict:
    """The row's connector options; an ``image_size`` option (a pixel decoder's) defaults to the encoder's."""
    options = dict(row.options)
    if "image_size" in {f.name for f in dataclasses.fields(CONNECTORS[row.connector].Options)}:
        options.setdefault("image_size", vision.image_size)
    return options


def connector_stages(name: str) -> list[str]:
    """The stages a connector's row trains: its declared pre-stage (if any), then the LLM stage."""
    pre = CONNECTORS[name].pre_stage
    return ([pre] if pre else []) + ["instruct"]


def run_dir(out: Path, label: str, seed: int) -> Path:
    return out / label / f"seed{seed}"


def connector_run_config(cfg: ArenaConfig, base: RunConfig, row: Row, seed: int, data: Path, vision: str,
                         out: Path) -> RunConfig:
    """The base config with this row's connector and seed, the shared frozen encoder, data and schedule."""
    rc = copy.deepcopy(base)
    rc.model.connector = ConnectorConfig(row.connector, connector_options(row, rc.model.vision))
    rc.model.vision.name_or_path = vision
    rc.model.vision.arch = {}                                  # the encoder comes from `vision`
    rc.data = dataclasses.replace(rc.data, path=str(data))
    tc = rc.train
    tc.stage, tc.train_vision, tc.init_from = "instruct", False, None
    tc.steps, tc.seed, tc.save_every, tc.eval_every = cfg.steps, seed, cfg.save_every, 0
    tc.device = cfg.device
    tc.batch_size = cfg.batch_size or tc.batch_size
    tc.lr = cfg.lr or tc.lr
    tc.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else min(tc.warmup_steps, cfg.steps // 10)
    tc.resume, tc.stop_after = False, None
    tc.vision_feature_store = str(out / "features") if cfg.feature_store else None
    tc.stages = connector_stages(row.connector)
    tc.stage_schedules = {s: dict(v) for s, v in cfg.stage_schedules.items() if s in tc.stages}
    rc.out = str(run_dir(out, row.label, seed))
    rc.preset = f"arena:{row.label}"
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


def trained_tasks(data: Path) -> set[str]:
    """The tasks the training records ask (each turn's task in a multi-turn record)."""
    tasks = set()
    for rec in json.loads((data / "train.json").read_text()):
        tasks.update(rec.get("tasks") or [rec.get("task")])
    return {t for t in tasks if t}


def select_per_task(records, limit: int | None, tasks: set[str] | None = None):
    """The first `limit` records of every task (among `tasks` when given; the same records for every row and
    seed), grouped by task so that a generation batch of one-word answers stops after a few tokens instead of
    waiting for captions."""
    by_task: dict[str, list] = {}
    for r in records:
        task = r.task or "all"
        if tasks is not None and task not in tasks:
            continue
        kept = by_task.setdefault(task, [])
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
    """Train every stage of the run (resuming or skipping what ran earlier); seconds and steps run here, per
    stage."""
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


@dataclasses.dataclass
class TestSet:
    """One test split the arena scores every run on."""
    name: str                      # "test" or "shift"
    file: Path
    limit: int | None
    tasks: set[str] | None
    held_out: tuple[str, ...] = ()  # colour-shape pairs training never showed (for the 'unseen' group)


def evaluate(model, cfg: ArenaConfig, test: TestSet, eval_dir: Path, feature_dir: Path | None) -> dict:
    """Generate answers on the test set's records and score them with the eval runner."""
    from ..eval.runner import predict, summarize, write_reports
    from ..models.feature_cache import FeatureCache
    data_cfg = DataConfig(path=str(test.file))
    report = SkipReport()
    records = select_per_task(load_split(test.file, data_cfg, report), test.limit, test.tasks)
    dataset = make_dataset(records, model, data_cfg, report, for_generation=True)
    model.vision.cache = FeatureCache(256.0, feature_dir) if feature_dir is not None else None
    t0 = time.perf_counter()
    preds = predict(model, dataset, cfg.eval_batch_size, GenerationConfig(max_new_tokens=cfg.max_new_tokens),
                    progress=False)
    seconds = time.perf_counter() - t0
    metrics = summarize(preds)
    write_reports(eval_dir, preds, metrics, report, len(records))
    scenes = load_scenes(test.file.parent)
    groups = group_scores(eval_dir / "predictions.jsonl", test.file, scenes, test.held_out) if scenes else {}
    return {"metrics": metrics, "groups": groups, "records": len(preds), "seconds": seconds,
            "images_per_s": sum(len(r.images) for r in records) / max(seconds, 1e-9),
            "visual_tokens": mean_visual_tokens(model, dataset)}


def run_one(cfg: ArenaConfig, run: RunConfig, row: Row, seed: int, out: Path, tests: list[TestSet]) -> dict:
    """Train + evaluate one row with one seed unless its result.json already exists for this exact config."""
    from ..models.device import resolve_device
    from ..models.precision import DTYPES, resolve_precision
    from ..models.vlm import VLBridgeModel
    where = Path(run.out)
    wanted = plain(run)
    saved_cfg = where / "run.json"
    if saved_cfg.is_file():
        saved = as_saved(RunConfig, json.loads(saved_cfg.read_text()))
        saved["train"].update(resume=False, stop_after=None)               # how it ran, not what it is
        require_same(saved, wanted, saved_cfg, f"a {row.label} run (seed {seed})")
    config_file = out / "configs" / f"{row.label}-seed{seed}.json"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    save_json(run, config_file)
    where.mkdir(parents=True, exist_ok=True)
    save_json(run, saved_cfg)
    result_file = where / RESULT
    if result_file.is_file():
        log(f"{row.label} seed {seed}: finished earlier ({result_file}); not retrained")
        return json.loads(result_file.read_text())
    timing = train_stages(run)
    lm = timing[run.train.stages[-1]]
    steps_run = run.train.steps - lm["start_step"]
    device = resolve_device(cfg.device)
    model = VLBridgeModel.from_pretrained(Path(lm["out"]), device=device,
                                          dtype=DTYPES[resolve_precision("auto", device)]).requires_grad_(False)
    feature_dir = Path(run.train.vision_feature_store) if run.train.vision_feature_store else None
    scored = {}
    for test in tests:
        log(f"{row.label} seed {seed}: evaluating on {test.file}")
        scored[test.name] = evaluate(model, cfg, test, where / ("eval" if test.name == "test" else f"eval_{test.name}"),
                                     feature_dir)
    main = scored["test"]
    result = {"connector": row.label, "registry_name": row.connector, "seed": seed,
              "options": run.model.connector.options,
              "train_seconds": lm["seconds"], "train_steps_run": steps_run,
              "pre_stage_seconds": sum(v["seconds"] for k, v in timing.items() if k != run.train.stages[-1]),
              "stages": timing,
              "train_ms_per_step": 1000 * lm["seconds"] / steps_run if steps_run else None,
              "train_tokens_per_s": train_tokens_per_s(where / run.train.stages[-1] / "log.jsonl"),
              "metrics": main["metrics"], "groups": main["groups"], "eval_records": main["records"],
              "eval_seconds": sum(s["seconds"] for s in scored.values()),
              "eval_images_per_s": main["images_per_s"], "visual_tokens": main["visual_tokens"],
              "max_visual_tokens": model.connector.num_tokens(), "dynamic": bool(model.connector.dynamic),
              "connector_params": model.connector.num_parameters(), "connector_flops": model.connector.flops(1),
              "shift": {k: v for k, v in scored.get("shift", {}).items() if k in ("metrics", "groups", "records")},
              "config": str(config_file),
              "command": rerun_commands(config_file, run, tests[0].file, tests[0].limit)}
    write_json_atomic(result_file, result)
    return result


def test_sets(cfg: ArenaConfig, data: Path, shift: Path | None) -> list[TestSet]:
    tasks = set(cfg.eval_tasks) if cfg.eval_tasks else trained_tasks(data)
    sets = [TestSet("test", data / "test.json", cfg.eval_limit, tasks)]
    if shift is not None:
        held_out = tuple(data_shapes(cfg, data).exclude_pairs)
        sets.append(TestSet("shift", shift / "test.json", cfg.shift_eval_limit, tasks, held_out))
    return sets


def prior_scores(cfg: ArenaConfig, data: Path, tests: list[TestSet], out: Path) -> dict:
    """The blind prior on the same records the runs are scored on (``prior.py``), with its groups; its predictions
    go to OUT/prior/<test set>/."""
    from .prior import prior_metrics
    data_cfg, scores = DataConfig(), {}
    for test in tests:
        records = select_per_task(load_split(test.file, data_cfg, SkipReport()), test.limit, test.tasks)
        where = out / "prior" / test.name
        metrics = prior_metrics(data / "train.json", test.file, {r.id for r in records}, where)
        scenes = load_scenes(test.file.parent)
        groups = group_scores(where / "predictions.jsonl", test.file, scenes, test.held_out) if scenes else {}
        scores[test.name] = {"metrics": metrics, "groups": groups}
    return scores


def timed_run(cfg: ArenaConfig, run: RunConfig, row: Row, seed: int, out: Path,
              tests: list[TestSet]) -> tuple[dict, dict]:
    """``run_one`` and its wall and CPU seconds (in a worker process: with the arena's thread count). On a machine
    shared with other jobs the CPU seconds say what the run costs; the wall seconds depend on the load."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log(f"{row.label} seed {seed}: start")
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_one(cfg, run, row, seed, out, tests)
    return result, {"wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}


def run_jobs(cfg: ArenaConfig, jobs: list[tuple[Row, int, RunConfig]], out: Path,
             tests: list[TestSet]) -> list[tuple[dict, dict]]:
    """Every (row, seed) run in order: here, or ``cfg.jobs`` at a time in worker processes (results in job
    order; a failed run stops the queue, and the finished ones are kept for a resume)."""
    if cfg.jobs <= 1:
        return [timed_run(cfg, run, row, seed, out, tests) for row, seed, run in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(timed_run, cfg, run, row, seed, out, tests) for row, seed, run in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def run_arena(cfg: ArenaConfig) -> list[dict]:
    """Everything: shared data and encoder, each row trained and evaluated per seed, then tables and plots."""
    from .plots import write_plots
    from .report import write_table
    validate(cfg)
    t_start, c_start = time.perf_counter(), time.process_time()
    rows = check_rows(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base = base_run_config(cfg)
    out = Path(cfg.out)
    given = prepare_data(cfg, out) if cfg.data else None        # a given --data is checked before anything is written
    dry_build_connectors(cfg, rows, base, data_image_size(given) if given else cfg.shapes.image_size)
    out.mkdir(parents=True, exist_ok=True)
    save_json(cfg, out / f"{cfg.name}.json")
    timing: dict = {"threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    data = given or prepare_data(cfg, out)
    shift = prepare_shift(cfg, data, out)
    timing["data_seconds"] = time.perf_counter() - t0
    base.model.vision = sized_vision(base.model.vision, data_image_size(data))
    t0 = time.perf_counter()
    vision = prepare_vision(cfg, base.model.vision, data, out)
    timing["vision_seconds"] = time.perf_counter() - t0
    tests = test_sets(cfg, data, shift)
    prior = prior_scores(cfg, data, tests, out)
    write_json_atomic(out / f"{cfg.name}_prior.json", prior)
    jobs = [(row, seed, connector_run_config(cfg, base, row, seed, data, vision, out))
            for seed in cfg.seeds for row in rows]
    done = run_jobs(cfg, jobs, out, tests)
    results = [result for result, _ in done]
    timing["runs"] = [{"row": row.label, "seed": seed, **seconds} for (row, seed, _), (_, seconds) in zip(jobs, done)]
    table = write_table(results, prior, cfg, out)
    write_plots(results, prior, out, cfg.name)
    timing["total_seconds"] = time.perf_counter() - t_start
    timing["cpu_seconds_runs"] = sum(r["cpu_seconds"] for r in timing["runs"])
    in_here = timing["cpu_seconds_runs"] if cfg.jobs <= 1 else 0.0
    timing["cpu_seconds_main"] = time.process_time() - c_start - in_here    # data, encoder, prior, tables, plots
    timing["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    write_json_atomic(out / f"{cfg.name}_timing.json", timing)
    log(f"wrote {out / cfg.name}.md, {cfg.name}.csv and plots in {timing['total_seconds'] / 60:.1f} min")
    print(table)
    return results
