"""Run stages: one stage of a run config with the loop its ``Stage.runner`` names, or several in order.

``run_stage(cfg)`` resolves ``cfg.train.stage`` through the connector's declared stages
(``Connector.stages``) and runs it: ``lm`` stages in the trainer's resumable next-token loop, a region
proposer's ``det`` stage, a visual tokenizer's ``lavit_tokenizer`` stage and Emu's visual ``emu_decoder``
stage in their own runners. Each runner
returns a ``StageResult``: where its output is and which config fields the next stage takes from it
(``train.init_from`` for a saved model, the connector's ``tokenizer`` option for a tokenizer directory).

``run_stages(cfg, names, out)`` runs a sequence (e.g. a connector's ``pre_stage`` then ``instruct``) into
``OUT/<stage>/``, each stage starting from the previous one's output; a finished stage is not rerun and an
interrupted LM stage resumes from its latest checkpoint.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import RunConfig, Stage, TrainConfig
from ..connectors import CONNECTORS
from ..errors import UserError, did_you_mean, unknown_name
from ..train.checkpoint import latest_checkpoint
from ..train.output_dir import check_output_dir, clear_outputs
from ..train.trainer import train


@dataclass
class StageResult:
    out: Path                                       # the stage's output (a model dir, a tokenizer dir)
    hand_off: dict[str, Any] = field(default_factory=dict)   # dotted config fields the next stage takes


def run_connector(cfg: RunConfig) -> tuple[str, dict]:
    """The connector (name, options) the run trains: the resumed checkpoint's or the ``init_from`` model's when
    there is one (the run's model comes from there), else the config's."""
    saved = latest_checkpoint(Path(cfg.out) / "checkpoints") if cfg.train.resume else None
    source = saved / "model" if saved is not None else Path(cfg.train.init_from) if cfg.train.init_from else None
    if source is not None and (source / "config.json").is_file():
        connector = json.loads((source / "config.json").read_text()).get("connector", {})
        return connector.get("name", cfg.model.connector.name), connector.get("options", {})
    return cfg.model.connector.name, cfg.model.connector.options


def declared_stage(cfg: RunConfig) -> Stage:
    """``cfg.train.stage`` as the run's connector declares it."""
    name, options = run_connector(cfg)
    if name not in CONNECTORS:
        raise unknown_name("connector", name, CONNECTORS)
    cls = CONNECTORS[name]
    stages = cls.stages(cls.Options(**options))
    if cfg.train.stage not in stages:
        raise UserError(f"connector {name!r} has no stage {cfg.train.stage!r}{did_you_mean(cfg.train.stage, stages)}; "
                        f"stages: {', '.join(stages)}")
    return stages[cfg.train.stage]


def saved_model(final: Path) -> StageResult:
    """A stage whose output is a saved model: the next stage starts from it."""
    return StageResult(final, {"train.init_from": str(final)})


def finished_model(cfg: RunConfig) -> StageResult | None:
    final = Path(cfg.out) / "final"
    return saved_model(final) if (final / "model.safetensors").is_file() else None


def training_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def tokenizer_fields() -> set[str]:
    from .lavit.tokenizer_stage import TokenizerTrainConfig
    return {f.name for f in dataclasses.fields(TokenizerTrainConfig)} - {"annotations", "vision", "out", "options"}


def check_schedule(stage: Stage, schedule: dict) -> None:
    """Fail on a schedule field the stage's runner does not have."""
    fields = RUNNERS[stage.runner].fields()
    unknown = sorted(set(schedule) - fields)
    if unknown:
        raise UserError(f"stage {stage.name!r}: unknown schedule field(s) {unknown}{did_you_mean(unknown[0], fields)}; "
                        f"fields: {', '.join(sorted(fields))}")


def with_schedule(cfg: RunConfig, stage: Stage) -> RunConfig:
    """``cfg`` with the stage's schedule (TrainConfig fields) applied."""
    if not stage.schedule:
        return cfg
    check_schedule(stage, dict(stage.schedule))
    run = copy.deepcopy(cfg)
    run.train = dataclasses.replace(run.train, **dict(stage.schedule))
    return run


def run_lm(cfg: RunConfig, stage: Stage, overwrite: bool = False) -> StageResult:
    return saved_model(train(with_schedule(cfg, stage), overwrite=overwrite))


def run_det(cfg: RunConfig, stage: Stage, overwrite: bool = False) -> StageResult:
    from .groma.det_stage import train_det
    check_output_dir(cfg.out, overwrite=overwrite)            # the stage is short: it has no resume
    if overwrite:
        clear_outputs(cfg.out)
    return saved_model(train_det(with_schedule(cfg, stage), stage))


def tokenizer_dir(out: Path) -> StageResult:
    """A visual tokenizer's output: the next stage's connector loads it (its ``tokenizer`` option)."""
    return StageResult(out, {"model.connector.options.tokenizer": str(out)})


def finished_tokenizer(cfg: RunConfig) -> StageResult | None:
    return tokenizer_dir(Path(cfg.out)) if (Path(cfg.out) / "model.safetensors").is_file() else None


def run_lavit_tokenizer(cfg: RunConfig, stage: Stage, overwrite: bool = False) -> StageResult:
    """The visual tokenizer on the data's scenes and the run's (pretrained) encoder, with the connector's options;
    ``stage.schedule`` may set fields of the tokenizer stage (``TokenizerTrainConfig``)."""
    from ..lavit.visual_tokenizer import tokenizer_options
    from .lavit.tokenizer_stage import TokenizerTrainConfig, train_tokenizer
    if not cfg.model.vision.name_or_path:
        raise UserError("the tokenizer stage reads a pretrained encoder: set --model.vision.name_or_path "
                         "(e.g. the output of `vlbridge pretrain-vision`)")
    if not cfg.data.path or not (Path(cfg.data.path) / "scenes.json").is_file():
        raise UserError("the tokenizer stage trains on DATA/scenes.json: pass --data DIR holding it "
                         "(`vlbridge data shapes` writes one)")
    options = CONNECTORS[cfg.model.connector.name].Options(**cfg.model.connector.options)
    tok_cfg = TokenizerTrainConfig(annotations=str(Path(cfg.data.path) / "scenes.json"),
                                   vision=cfg.model.vision.name_or_path, out=cfg.out, seed=cfg.train.seed,
                                   options=tokenizer_options(options))
    check_schedule(stage, dict(stage.schedule))
    check_output_dir(cfg.out, overwrite=overwrite)
    return tokenizer_dir(train_tokenizer(dataclasses.replace(tok_cfg, **dict(stage.schedule))))


def decoder_fields() -> set[str]:
    from .emu.decoder import DecoderTrainConfig
    return {f.name for f in dataclasses.fields(DecoderTrainConfig)} - {"model", "data", "out"}


def run_emu_decoder(cfg: RunConfig, stage: Stage, overwrite: bool = False) -> StageResult:
    """Emu's visual decoder on the run's model (``train.init_from``: the previous stage's output) and the data's
    scenes; writes OUT/final (the model with its decoder). ``stage.schedule`` may set ``DecoderTrainConfig`` fields."""
    from .emu.decoder import DecoderTrainConfig, train_decoder
    if not cfg.train.init_from:
        raise UserError("the decoder stage paints a trained model's embeddings: run it after an LM stage "
                         "(e.g. --train.stages instruct,decoder) or pass --train.init_from MODEL")
    if not cfg.data.path:
        raise UserError("the decoder stage learns from DATA/scenes.json: pass --data DIR")
    check_schedule(stage, dict(stage.schedule))
    check_output_dir(cfg.out, overwrite=overwrite)
    dec = DecoderTrainConfig(model=cfg.train.init_from, data=cfg.data.path, out=str(Path(cfg.out) / "final"),
                             seed=cfg.train.seed)
    return saved_model(train_decoder(dataclasses.replace(dec, **dict(stage.schedule))))


@dataclass(frozen=True)
class Runner:
    run: Callable[..., StageResult]                            # (cfg, stage, overwrite) -> result
    finished: Callable[[RunConfig], StageResult | None]      # the result of an earlier complete run, else None
    fields: Callable[[], set[str]]                           # the settings a stage schedule may give it


RUNNERS: dict[str, Runner] = {
    "lm": Runner(run_lm, finished_model, training_fields),
    "det": Runner(run_det, finished_model, training_fields),
    "lavit_tokenizer": Runner(run_lavit_tokenizer, finished_tokenizer, tokenizer_fields),
    "emu_decoder": Runner(run_emu_decoder, finished_model, decoder_fields),
}


def run_stage(cfg: RunConfig, schedule: dict | None = None, overwrite: bool = False) -> StageResult:
    """Run ``cfg.train.stage`` with ``schedule`` (in its runner's terms; the connector's declared schedule applies
    only inside ``run_stages``); ``overwrite`` replaces a finished output instead of refusing it."""
    stage = dataclasses.replace(declared_stage(cfg), schedule=tuple((schedule or {}).items()))
    if stage.runner not in RUNNERS:
        raise UserError(f"stage {stage.name!r} names runner {stage.runner!r}; runners: {', '.join(RUNNERS)}")
    return RUNNERS[stage.runner].run(cfg, stage, overwrite)


def set_field(cfg: RunConfig, dotted: str, value) -> None:
    """Set a nested config field by its dotted name (``model.connector.options.tokenizer`` reaches into the dict)."""
    *path, last = dotted.split(".")
    obj = cfg
    for part in path:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    if isinstance(obj, dict):
        obj[last] = value
    else:
        setattr(obj, last, value)


def stage_config(cfg: RunConfig, name: str, out: Path, hand_off: dict) -> RunConfig:
    """``cfg`` for stage ``name`` alone, into ``out/name``, with the previous stage's hand-off."""
    run = copy.deepcopy(cfg)
    run.train.stage, run.train.stages, run.train.stage_schedules = name, [], {}
    run.out = str(out / name)
    for key, value in hand_off.items():
        set_field(run, key, value)
    return run


def run_stages(cfg: RunConfig, names: list[str] | None = None, out: str | Path | None = None) -> list[StageResult]:
    """Run stages ``names`` (default ``cfg.train.stages``) in order into ``out/<stage>/`` (default ``cfg.out``), each
    from the previous one's output, with the connector's declared schedule and ``cfg.train.stage_schedules``;
    stages that finished earlier are skipped (their hand-off still passes on), an interrupted LM stage resumes."""
    names = list(names if names is not None else cfg.train.stages)
    out, results, hand_off = Path(out if out is not None else cfg.out), [], {}
    unknown = sorted(set(cfg.train.stage_schedules) - set(names))
    if unknown:
        raise UserError(f"train.stage_schedules names stage(s) {unknown} that are not run (stages: {names})")
    for name in names:
        run = stage_config(cfg, name, out, hand_off)
        stage = declared_stage(run)
        result = RUNNERS[stage.runner].finished(run)
        if result is None:
            run.train.resume = latest_checkpoint(Path(run.out) / "checkpoints") is not None
            result = run_stage(run, {**dict(stage.schedule), **cfg.train.stage_schedules.get(name, {})})
        results.append(result)
        hand_off = {**hand_off, **result.hand_off}
    return results
