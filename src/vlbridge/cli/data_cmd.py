"""`vlbridge data shapes`: write the ShapesWorld dataset (PNGs + LLaVA-style train/val/test JSON)."""
from __future__ import annotations

import argparse
import json

from ..data.shapesworld import ShapesWorldConfig, generate
from .args import add_config_args, apply_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="generate built-in datasets")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    shapes = kinds.add_parser("shapes", help="ShapesWorld: procedural scenes with eleven VQA/grounding tasks",
                              description="Write ShapesWorld (images/*.png, train.json, val.json, test.json, "
                                          "scenes.json) into --out. Deterministic by seed.")
    shapes.add_argument("--out", required=True, help="output directory (also the image folder)")
    shapes.set_defaults(run=run_shapes, _dests=add_config_args(shapes, ShapesWorldConfig))


def run_shapes(args: argparse.Namespace) -> int:
    cfg = apply_overrides(ShapesWorldConfig(), args, args._dests)
    cfg.__post_init__()
    summary = generate(cfg, args.out)
    print(json.dumps({k: summary[k] for k in ("train", "val", "test")}), f"records written to {args.out}")
    return 0
