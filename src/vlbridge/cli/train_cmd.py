"""`vlbridge train`: train a model from a preset and/or a saved config, with flags overriding fields."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from ..config import RunConfig, load_run_config
from ..presets import PRESETS, get_preset
from .args import add_config_args, apply_overrides

ALIASES = {
    "data.path": ["--data"], "out": ["--out"], "train.steps": ["--steps"], "train.stage": ["--stage"],
    "train.resume": ["--resume"], "model.connector.name": ["--connector"], "train.lr": ["--lr"],
    "train.batch_size": ["--batch-size"], "train.seed": ["--seed"], "train.init_from": ["--init-from"],
}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model, one stage at a time (align, instruct, or a stage the connector declares)",
                       description="Train a VLBridge model. Start from --preset (or --config RUN/config.json); "
                                   "every config field can be overridden as --section.field.")
    p.add_argument("--preset", default="tiny-cpu", choices=sorted(PRESETS), help="named preset (default: tiny-cpu)")
    p.add_argument("--config", help="a saved run config.json to start from instead of the preset")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=run, _dests=add_config_args(p, RunConfig, aliases=ALIASES))


def resolve(args: argparse.Namespace) -> RunConfig:
    """--config, else (when resuming) the run's own saved config, else the preset; then the flags."""
    saved = Path(getattr(args, "out", "")) / "config.json"
    if args.config:
        cfg = load_run_config(args.config)
    elif getattr(args, "train.resume", False) and saved.is_file():
        cfg = load_run_config(saved)
    else:
        cfg = get_preset(args.preset)
    return apply_overrides(cfg, args, args._dests)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    if args.print_config:
        print(json.dumps(dataclasses.asdict(cfg), indent=2))
        return 0
    from ..recipes.stages import run_stage, run_stages
    result = run_stages(cfg)[-1] if cfg.train.stages else run_stage(cfg)
    if os.environ.get("RANK", "0") == "0":           # under torchrun, one line from rank 0
        print(f"model: {result.out}")
    return 0
