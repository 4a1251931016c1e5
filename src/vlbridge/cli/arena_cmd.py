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
    p = sub.add_parser("arena", help="compare connectors: same encoder, LLM, data, seeds and step budget",
                       description="Train each connector once per seed with the same frozen vision encoder, LLM, "
                                   "ShapesWorld data, schedule and step budget; evaluate all on the same test "
                                   "records (and a held-out shifted test set); write OUT/<name>.md (means with 95% "
                                   "intervals over seeds, the blind prior, paired differences from mlp), "
                                   "<name>.csv, plots and each run's config. Re-running the same command resumes: "
                                   "finished (connector, seed) runs are not retrained. Flags override the preset; "
                                   "values in brackets are the preset's (--print-config shows the whole resolved "
                                   "config).",
                       epilog=examples("vlbridge arena --quick --out runs/arena-quick",
                                       "vlbridge arena --out runs/arena",
                                       "vlbridge arena --connectors mlp,qformer,pargo --seeds 0,1,2 --out runs/small",
                                       "vlbridge arena --data data/shapes --vision runs/demo/vision --out runs/a2"))
    p.add_argument("--preset", default="arena-cpu", choices=sorted(ARENA_PRESETS),
                   help="named arena preset the flags override (default: arena-cpu)")
    p.add_argument("--quick", action="store_const", const="arena-quick", dest="preset",
                   help="the arena-quick preset: a smoke run of the whole pipeline in a few minutes")
    p.add_argument("--print-config", action="store_true", help="print the resolved arena config and exit")
    dests = add_config_args(p, ArenaConfig, aliases=ALIASES)
    show_defaults_of(p, lambda ns: (start(ns), getattr(ns, "preset", None) or "arena-cpu"))
    p.set_defaults(run=run, _dests=dests)


def start(args: argparse.Namespace):
    from ..arena.config import get_arena_preset
    return get_arena_preset(getattr(args, "preset", None) or "arena-cpu")


def run(args: argparse.Namespace) -> int:
    from ..arena.runner import run_arena
    cfg = start(args)
    preset_options = dict(cfg.connector_options)
    cfg = apply_overrides(cfg, args, args._dests)
    if hasattr(args, "connector_options"):  # per row, over the preset's (a variant row keeps the others' options)
        cfg.connector_options = {**preset_options, **args.connector_options}
    cfg = validate(cfg)
    if args.print_config:
        print_config(cfg)
        return 0
    run_arena(cfg)
    print(f"arena written to {cfg.out} ({cfg.name}.md, {cfg.name}.csv, {cfg.name}_*.png, configs/)")
    return 0
