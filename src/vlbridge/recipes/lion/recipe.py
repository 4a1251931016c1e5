"""LION's staged instruction tuning as one command: `vlbridge recipe lion --data D --out RUN`.

Before the stages (``prepare``): an encoder built from scratch is pretrained on DATA/scenes.json into RUN/vision
(there is no EVA-CLIP to download; a given ``--model.vision.name_or_path`` is used as it is) and frozen; an LLM
built from scratch is pretrained on the data's text without images into RUN/llm (``text_lm``); with
tags (``--tags.mode hard|soft``) a tagger is trained on that encoder into RUN/tagger (unless ``--tagger DIR``)
and the data is tagged into RUN/data/ (read with the original dir as image folder).

Stages (the ``lion`` connector declares them): ``image`` (branch A + the image adapter on image-level tasks),
``region`` (branch B + the region adapter on region-level tasks), ``mixed`` (both branches, the adapters and
the router on everything), each into RUN/<stage>/, each resumable, saved and evaluated on the test records
(RUN/<stage>/eval/: metrics.json, metrics.md, predictions.jsonl). ``--train.stages joint`` runs LION's parts
all at once instead, ``--train.stages region`` one stage alone (``--train.init_from`` a model to start from).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ...config import DataConfig, RunConfig, opt
from ...data.records import SkipReport
from ...errors import UserError
from ...lion.tags import TagsConfig
from ..named import Recipe
from ..stages import StageResult


@dataclass
class StageEval:
    data: str | None = opt(None, "records each stage's model is evaluated on; None = DATA/test.json (tagged like "
                                 "the training data)")
    limit: int | None = opt(100, "records per task (None = all)")
    batch_size: int = opt(64, "records per generation batch")
    max_new_tokens: int = opt(40, "generation budget per answer")
    skip: bool = opt(False, "do not evaluate the stages")
    stages: list[str] | None = opt(None, "the stages to evaluate (None = every stage run)")


@dataclass
class LionRecipeOptions:
    tags: TagsConfig = field(default_factory=lambda: TagsConfig(mode="none"))
    tagger: str | None = opt(None, "a trained tagger dir (`vlbridge lion tagger`); None = train one into RUN/tagger "
                                   "when tags are used")
    tagger_steps: int = opt(300, "tagger training steps (when it is trained here)")
    vision_steps: int = opt(400, "encoder pretraining steps (when the preset builds its encoder from scratch)")
    vision_attributes: list[str] = opt(["shape", "color"], "attributes the encoder's patches learn in pretraining")
    llm_steps: int = opt(600, "text-only pretraining steps of an LLM the preset builds from scratch (it then stays "
                              "frozen, as LION's FlanT5, unless the connector's llm_stages name a stage); 0 = no "
                              "pretraining (the LLM learns inside the stages of llm_stages)")
    eval: StageEval = field(default_factory=StageEval)


def log(msg: str) -> None:
    print(f"[lion] {msg}", file=sys.stderr, flush=True)


def prepare(cfg: RunConfig, options: LionRecipeOptions) -> RunConfig:
    options.tags.__post_init__()                              # flags set the fields after construction: check them
    if not cfg.data.path or not Path(cfg.data.path).is_dir():
        raise FileNotFoundError(f"--data {cfg.data.path!r} is not a dataset dir (make one with `vlbridge data shapes "
                                "--extra_tasks gcap,rec_neg --single_turn_tasks rec,reg,gcap,rec_neg ...`)")
    if cfg.model.connector.name != "lion":
        raise UserError(f"the lion recipe trains the lion connector, not {cfg.model.connector.name!r}")
    cfg = copy.deepcopy(cfg)
    out, data = Path(cfg.out), Path(cfg.data.path)
    cfg.model.vision.name_or_path = pretrained_vision(cfg, options, data, out)
    cfg.model.vision.arch = {}
    cfg.train.train_vision = False
    if not cfg.model.llm.name_or_path and options.llm_steps > 0:
        from .text_lm import pretrain_text_lm
        log(f"llm: text-only pretraining ({options.llm_steps} steps) into {out / 'llm'}, or reusing it")
        cfg.model.llm.name_or_path = str(pretrain_text_lm(cfg, options.llm_steps, out / "llm"))
        cfg.model.llm.arch, cfg.model.llm.tokenizer = {}, None
    if options.tags.mode != "none":
        cfg.data = tagged_data(cfg.data, options, data, out, cfg.model.vision.name_or_path)
    return cfg


def pretrained_vision(cfg: RunConfig, options: LionRecipeOptions, data: Path, out: Path) -> str:
    if cfg.model.vision.name_or_path:
        return cfg.model.vision.name_or_path
    from ..vision_pretrain import VisionPretrainConfig, pretrain_vision
    target = out / "vision"
    if (target / "vision_pretrain.json").is_file():
        log(f"vision: reusing {target}")
        return str(target)
    if not (data / "scenes.json").is_file():
        raise FileNotFoundError(f"{data} has no scenes.json to pretrain the encoder on; pass --model.vision.name_or_path")
    log(f"vision: pretraining the encoder for {options.vision_steps} steps into {target}")
    pretrain_vision(VisionPretrainConfig(annotations=str(data / "scenes.json"), out=str(target),
                                         attributes=list(options.vision_attributes), steps=options.vision_steps,
                                         seed=cfg.train.seed, vision=cfg.model.vision))
    return str(target)


def tagged_data(data_cfg: DataConfig, options: LionRecipeOptions, data: Path, out: Path, vision: str) -> DataConfig:
    """The data with tags in the questions (RUN/data/), training the tagger first if none is given."""
    from .tag_data import tag_dataset
    from .tagger_stage import TaggerConfig, train_tagger
    tagger = Path(options.tagger) if options.tagger else out / "tagger"
    if not (tagger / "model.safetensors").is_file():
        if options.tagger:
            raise FileNotFoundError(f"--tagger {tagger} is not a tagger dir (train one with `vlbridge lion tagger`)")
        log(f"tagger: training into {tagger}")
        train_tagger(TaggerConfig(data=str(data), vision=vision, out=str(tagger), steps=options.tagger_steps,
                                  seed=options.tags.seed))
    tagged = out / "data"
    stamp = tagged / "tags.json"
    wanted = {"config": dataclasses.asdict(options.tags), "tagger": str(tagger), "data": str(data)}
    if not (stamp.is_file() and {k: json.loads(stamp.read_text()).get(k) for k in wanted} == wanted):
        log(f"tags: writing {options.tags.mode} tags (noise {options.tags.noise}) into {tagged}")
        tag_dataset(data, tagged, tagger, options.tags)
    return dataclasses.replace(data_cfg, path=str(tagged), image_folder=str(data))


def evaluate_stage(cfg: RunConfig, options: LionRecipeOptions, stage: str, result: StageResult) -> None:
    """Evaluate a stage's saved model on the test records into RUN/<stage>/eval (once)."""
    if options.eval.skip or (options.eval.stages is not None and stage not in options.eval.stages):
        return
    from ...eval.runner import predict, summarize, write_reports
    from ...generate import GenerationConfig
    from ...models.vlm import VLBridgeModel
    from ...train.data import load_split, make_dataset
    out = Path(cfg.out) / stage / "eval"
    if (out / "metrics.json").is_file():
        return
    test = Path(options.eval.data) if options.eval.data else Path(cfg.data.path) / "test.json"
    data_cfg = DataConfig(path=str(test), image_folder=cfg.data.image_folder)
    report = SkipReport()
    records = per_task(load_split(test, data_cfg, report), options.eval.limit)
    model = VLBridgeModel.from_pretrained(result.out)
    dataset = make_dataset(records, model, data_cfg, report, for_generation=True)
    log(f"{stage}: evaluating {result.out} on {len(dataset)} records of {test}")
    preds = predict(model, dataset, options.eval.batch_size, GenerationConfig(max_new_tokens=options.eval.max_new_tokens))
    write_reports(out, preds, summarize(preds), report, len(records))


def per_task(records, limit: int | None):
    """The first ``limit`` records of every task, grouped by task (one-word answers batch together)."""
    by_task: dict[str, list] = {}
    for r in records:
        kept = by_task.setdefault(r.task or "all", [])
        if limit is None or len(kept) < limit:
            kept.append(r)
    return [r for kept in by_task.values() for r in kept]


LION = Recipe(name="lion", help="JiuTian-LION: image stage, region stage, mixed stage (lion connector, mixture of "
                                "adapters, optional soft-prompted tags), each saved and evaluated",
              preset="tiny-cpu-lion", stages=("image", "region", "mixed"), options=LionRecipeOptions,
              prepare=prepare, evaluate=evaluate_stage)
