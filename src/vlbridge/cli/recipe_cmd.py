"""`vlbridge recipe NAME`: a paper's staged schedule in one command (see ``vlbridge.recipes.named``).

    vlbridge recipe lion --data DATA --out RUN        LION: image -> region -> mixed stages, each evaluated

Every run-config field is a flag (``--section.field``, as in `vlbridge train`), and so is every option of
the recipe (``--tags.mode soft``, ``--eval.limit 50`` ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types

from ..config import RunConfig, load_run_config
from ..presets import PRESETS, get_preset
from .args import add_config_args, apply_overrides, show_defaults_of
from .parser import examples
from .train_cmd import ALIASES


def add_parser(sub) -> None:
    from ..recipes.named import recipes
    p = sub.add_parser("recipe", help="run a named multi-stage recipe (e.g. lion), each stage saved and evaluated",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    for recipe in recipes().values():
        r = names.add_parser(recipe.name, help=recipe.help, description=recipe.help,
                             epilog=examples(f"vlbridge recipe {recipe.name} --data DATA --out RUN",
                                             f"vlbridge recipe {recipe.name} --data DATA --out RUN --train.stages region "
                                             "--train.init-from RUN/image/final"))
        r.add_argument("--preset", default=recipe.preset, choices=sorted(PRESETS),
                       help=f"named preset to start from (default: {recipe.preset})")
        r.add_argument("--config", help="a saved run config.json to start from instead of the preset")
        r.add_argument("--print-config", action="store_true", help="print the resolved configs and exit")
        dests, recipe_dests = add_config_args(r, RunConfig, aliases=ALIASES), add_config_args(r, recipe.options)
        show_defaults_of(r, lambda ns, recipe=recipe: (both(start(ns, recipe), recipe.options()),
                                                       getattr(ns, "config", None) or getattr(ns, "preset", None)
                                                       or recipe.preset))
        r.set_defaults(run=run, _recipe=recipe, _dests=dests, _recipe_dests=recipe_dests)


def start(args: argparse.Namespace, recipe) -> RunConfig:
    config = getattr(args, "config", None)
    return load_run_config(config) if config else get_preset(getattr(args, "preset", None) or recipe.preset)


def both(cfg: RunConfig, options):
    """One object holding the run config's sections and the recipe's options (their names do not overlap), so
    the help of every flag shows where it starts."""
    return types.SimpleNamespace(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)},
                                 **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})


def run(args: argparse.Namespace) -> int:
    from ..recipes.named import run_recipe
    recipe = args._recipe
    cfg = apply_overrides(start(args, recipe), args, args._dests)
    options = apply_overrides(recipe.options(), args, args._recipe_dests)
    if args.print_config:
        print(json.dumps({"run": dataclasses.asdict(cfg), recipe.name: dataclasses.asdict(options)}, indent=2))
        return 0
    results = run_recipe(recipe, cfg, options)
    for result in results:
        print(f"stage output: {result.out}")
    return 0
