"""`vlbridge arena`: train and evaluate several connectors under identical conditions; one table, two plots."""
from __future__ import annotations

import argparse

from ..config import validate
from .args import add_config_args, apply_overrides, print_config, show_defaults_of
from .parser import examples

# ShapesWorld knobs take the flags of `vlbridge data shapes` where they do not clash with the arena's own
# (--steps, --seed); every one is also --shapes.FIELD.
SHAPES_FLAGS = ("image_size", "min_objects", "max_objects", "object_size", "glyph_scale", "glyph_prob",
                "extra_tasks", "task_weights")
ALIASES = {"out": ["--out", "--output-dir"], **{f"shapes.{f}": [f"--{f}"] for f in SHAPES_FLAGS}}


def add_parser(sub) -> None:
    from ..arena.config import ARENA_PRESETS, ArenaConfig
    p = sub.add_parser("arena", help="compare connectors: same encoder, LLM, data, seed and step budget",
                       description="Train each connector with the same frozen vision encoder, LLM, ShapesWorld "
                                   "data, seed, schedule and step budget; evaluate all on the same test split; "
                                   "write OUT/arena.md, arena.csv, plots and each connector's config. Re-running "
                                   "the same command resumes: finished connectors are not retrained. Flags "
                                   "override the preset; values in brackets are the preset's (--print-config "
                                   "shows the whole resolved config).",
                       epilog=examples("vlbridge arena --out runs/arena",
                                       "vlbridge arena --connectors mlp,qformer,pargo --steps 300 --out runs/small",
                                       "vlbridge arena --data data/shapes --vision runs/demo/vision --out runs/a2"))
    p.add_argument("--preset", default="arena-cpu", choices=sorted(ARENA_PRESETS),
                   help="named arena preset the flags override (default: arena-cpu)")
    p.add_argument("--print-config", action="store_true", help="print the resolved arena config and exit")
    dests = add_config_args(p, ArenaConfig, aliases=ALIASES)
    show_defaults_of(p, lambda ns: (start(ns), getattr(ns, "preset", None) or "arena-cpu"))
    p.set_defaults(run=run, _dests=dests)


def start(args: argparse.Namespace):
    from ..arena.config import get_arena_preset
    return get_arena_preset(getattr(args, "preset", None) or "arena-cpu")


def run(args: argparse.Namespace) -> int:
    from ..arena.runner import run_arena
    cfg = validate(apply_overrides(start(args), args, args._dests))
    if args.print_config:
        print_config(cfg)
        return 0
    run_arena(cfg)
    print(f"arena written to {cfg.out} (arena.md, arena.csv, arena_tasks.png, arena_tokens.png, configs/)")
    return 0
