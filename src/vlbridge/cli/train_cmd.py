"""`vlbridge train`: train a model from a preset and/or a saved config, with flags overriding fields."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from ..config import RunConfig, load_run_config, validate
from ..errors import UserError
from ..presets import PRESETS, get_preset
from .args import add_config_args, apply_overrides, show_defaults_of
from .parser import examples

# Short flags for the fields set most often; the same concept has the same flag in every command.
ALIASES = {
    "data.path": ["--data"], "out": ["--out", "--output-dir"], "train.steps": ["--steps"],
    "train.stage": ["--stage"], "train.resume": ["--resume"], "model.connector.name": ["--connector"],
    "train.lr": ["--lr"], "train.batch_size": ["--batch-size"], "train.seed": ["--seed"],
    "train.init_from": ["--init-from"], "model.vision.name_or_path": ["--vision"],
    "model.llm.name_or_path": ["--llm"], "data.image_folder": ["--image-folder"],
    "data.on_bad_record": ["--on-bad-record"],
}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model, one stage or several in order (align, instruct, or a stage "
                                     "the connector declares)",
                       description="Train a VLBridge model. Start from --preset (or --config RUN/config.json); "
                                   "every config field can be overridden as --section.field. The value in "
                                   "brackets after each option is the one the run starts from: the preset's "
                                   "(--preset NAME --help shows another's); --print-config prints the whole "
                                   "resolved config. An --out holding a trained model or checkpoints is refused "
                                   "unless --resume continues it or --overwrite replaces it.",
                       epilog=examples(
                           "vlbridge train --preset tiny-cpu --data data/shapes --out runs/demo",
                           "vlbridge train --preset tiny-cpu --data data/shapes --out runs/demo --resume",
                           "vlbridge train --config runs/demo/config.json --steps 2000 --out runs/longer",
                           "vlbridge train --preset clip-qwen2 --vision CLIP_DIR --llm QWEN_DIR --data DATA "
                           "--out runs/align",
                           "vlbridge train --preset tiny-cpu --print-config"))
    p.add_argument("--preset", default="tiny-cpu", choices=sorted(PRESETS), help="named preset (default: tiny-cpu)")
    p.add_argument("--config", help="a saved run config.json to start from instead of the preset")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds (final model, checkpoints, logs) instead of refusing; nothing "
                        "is removed before the data and model have loaded")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    dests = add_config_args(p, RunConfig, aliases=ALIASES)
    show_defaults_of(p, start)
    p.set_defaults(run=run, _dests=dests)


def start(args: argparse.Namespace) -> tuple[RunConfig, str]:
    """The config the flags override and its label: --config, else the preset."""
    if getattr(args, "config", None):
        return load_run_config(args.config), Path(args.config).name
    preset = getattr(args, "preset", None) or "tiny-cpu"
    return get_preset(preset), preset


def resolve(args: argparse.Namespace) -> RunConfig:
    """--config, else (when resuming) the run's own saved config, else the preset; then the flags."""
    saved = Path(getattr(args, "out", "")) / "config.json"
    if not args.config and getattr(args, "train.resume", False) and saved.is_file():
        cfg = load_run_config(saved)
    else:
        cfg = start(args)[0]
    return validate(apply_overrides(cfg, args, args._dests))


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    if args.print_config:
        print(json.dumps(dataclasses.asdict(cfg), indent=2))
        return 0
    from ..recipes.stages import run_stage, run_stages
    if cfg.train.stages:
        if args.overwrite:
            raise UserError("--overwrite replaces one stage's output; with --train.stages finished stages are "
                            "kept and an interrupted one resumes: remove OUT/<stage> to redo a stage")
        result = run_stages(cfg)[-1]
    else:
        result = run_stage(cfg, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":           # under torchrun, one line from rank 0
        print(f"model: {result.out}")
    return 0
