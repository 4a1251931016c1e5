"""`vlbridge arena`: train and evaluate several connectors under identical conditions; one table, two plots."""
from __future__ import annotations

import argparse
import dataclasses
import json

from .args import add_config_args, apply_overrides

ALIASES = {
    "shapes.n": ["--n-images"], "shapes.image_size": ["--image-size"], "shapes.min_objects": ["--min-objects"],
    "shapes.max_objects": ["--max-objects"], "shapes.object_size": ["--object-size"],
    "shapes.glyph_scale": ["--glyph-scale"], "shapes.glyph_prob": ["--glyph-prob"],
}


def add_parser(sub) -> None:
    from ..arena.config import ARENA_PRESETS, ArenaConfig
    p = sub.add_parser("arena", help="compare connectors: same encoder, LLM, data, seeds and step budget",
                       description="Train each connector once per seed with the same frozen vision encoder, LLM, "
                                   "ShapesWorld data, schedule and step budget; evaluate all on the same test "
                                   "records (and a held-out shifted test set); write OUT/<name>.md (means with 95% "
                                   "intervals over seeds, the blind prior, paired differences from mlp), "
                                   "<name>.csv, plots and each run's config. Re-running the same command resumes: "
                                   "finished (connector, seed) runs are not retrained. Flags override the preset; "
                                   "the defaults printed below are the fields' own, --print-config shows the "
                                   "preset's.")
    p.add_argument("--preset", default="arena-cpu", choices=sorted(ARENA_PRESETS),
                   help="named arena preset the flags override (default: arena-cpu)")
    p.add_argument("--quick", action="store_const", const="arena-quick", dest="preset",
                   help="the arena-quick preset: a smoke run of the whole pipeline in a few minutes")
    p.add_argument("--print-config", action="store_true", help="print the resolved arena config and exit")
    p.set_defaults(run=run, _dests=add_config_args(p, ArenaConfig, aliases=ALIASES))


def run(args: argparse.Namespace) -> int:
    from ..arena.config import get_arena_preset
    from ..arena.runner import run_arena
    cfg = apply_overrides(get_arena_preset(args.preset), args, args._dests)
    cfg.shapes.__post_init__()                      # validate (and normalise) the overridden data knobs
    if args.print_config:
        print(json.dumps(dataclasses.asdict(cfg), indent=2))
        return 0
    run_arena(cfg)
    print(f"arena written to {cfg.out} ({cfg.name}.md, {cfg.name}.csv, {cfg.name}_*.png, configs/)")
    return 0
