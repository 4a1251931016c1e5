"""Named recipes: a paper's training schedule as one command (`vlbridge recipe NAME --data D --out RUN`).

A ``Recipe`` is a preset to start from, the stage names it runs in order (``run_stages``: each into
``RUN/<stage>/`` from the previous one's output, a finished stage skipped, an interrupted one resumed), its own
options (a dataclass the CLI turns into flags), a ``prepare`` step that readies what the stages read (an
encoder, tagged data) and returns the run config, and an ``evaluate`` step run on each stage's model once it is
saved (skipped when its report exists).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import RunConfig, save_json
from ..errors import UserError
from .stages import StageResult, run_stages


@dataclass(frozen=True)
class Recipe:
    name: str
    help: str
    preset: str                                                   # the preset the run config starts from
    stages: tuple[str, ...]
    options: type                                                 # the recipe's own options (a dataclass)
    prepare: Callable[[RunConfig, Any], RunConfig]                # -> the run config the stages use
    evaluate: Callable[[RunConfig, Any, str, StageResult], None] | None = None


def run_recipe(recipe: Recipe, cfg: RunConfig, options) -> list[StageResult]:
    """Prepare, then run the stages (``cfg.train.stages``, default the recipe's) in order, evaluating each."""
    cfg = recipe.prepare(cfg, options)
    names = list(cfg.train.stages or recipe.stages)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(cfg, out / "recipe_config.json")
    (out / "recipe_options.json").write_text(json.dumps(
        {"recipe": recipe.name, "stages": names, **dataclasses.asdict(options)}, indent=2) + "\n")
    unknown = sorted(set(cfg.train.stage_schedules) - set(recipe.stages) - set(names))
    if unknown:
        raise UserError(f"train.stage_schedules names stage(s) {unknown} that the {recipe.name} recipe does not run")
    results = []
    for i, name in enumerate(names):
        upto = names[: i + 1]
        run = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, stage_schedules={k: v for k, v in cfg.train.stage_schedules.items() if k in upto}))
        result = run_stages(run, upto, out)[-1]
        if recipe.evaluate is not None:
            recipe.evaluate(cfg, options, name, result)
        results.append(result)
    return results


def recipes() -> dict[str, Recipe]:
    """Every named recipe (imported on demand: each pulls in its pipeline)."""
    from .lion.recipe import LION
    return {r.name: r for r in (LION,)}
