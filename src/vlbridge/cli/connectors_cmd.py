"""`vlbridge connectors`: every registered connector with its visual tokens, parameters and forward FLOPs.

The numbers are for a preset's vision encoder (its patch grid and width) and LLM width. Encoders and LLMs
built from ``arch`` need nothing on disk (the vision tower is built from its config to read the grid);
presets that name checkpoints need them as local directories (``--vision DIR``, ``--llm DIR``): nothing
is downloaded. Each connector uses its default options, the preset's connector its configured ones, and
``--connector-options`` overrides per connector (as in ``vlbridge arena``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import ModelConfig, RunConfig, validate
from ..errors import UserError, unknown_name
from ..presets import PRESETS, get_preset
from .args import add_config_args, apply_overrides, json_object, show_defaults_of
from .parser import examples


def add_parser(sub) -> None:
    from ..connectors import CONNECTORS
    summaries = "\n".join(f"  {name:<14} {summary(cls)}" for name, cls in CONNECTORS.items())
    p = sub.add_parser("connectors", help="list connectors with tokens, parameters and FLOPs for a preset",
                       description="List every registered connector with its output token count, parameter count "
                                   "and forward FLOPs (per image) for a preset's vision grid and widths. Values "
                                   "in brackets are the preset's. --describe NAME shows one connector's options, "
                                   "defaults and stages.\n\n"
                                   f"connectors:\n{summaries}",
                       epilog=examples("vlbridge connectors", "vlbridge connectors --preset tiny-cpu-vit --json",
                                       "vlbridge connectors --describe pargo",
                                       "vlbridge connectors --connector-options '{\"qformer\": {\"layers\": 2}}'",
                                       "vlbridge connectors --preset clip-qwen2 --vision CLIP_DIR --llm QWEN_DIR"))
    p.add_argument("--describe", metavar="NAME", choices=sorted(CONNECTORS),
                   help="print what connector NAME does, every option with its meaning and default, its stages")
    p.add_argument("--preset", default="tiny-cpu", choices=sorted(PRESETS), help="named preset (default: tiny-cpu)")
    p.add_argument("--connector-options", type=json_object, default={}, metavar="JSON",
                   help='options per connector as JSON, e.g. \'{"qformer": {"layers": 2, "hidden": 128}}\'')
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    dests = add_config_args(p, RunConfig, include=("model.vision.", "model.llm."),
                            aliases={"model.vision.name_or_path": ["--vision"], "model.llm.name_or_path": ["--llm"]})
    show_defaults_of(p, lambda ns: (get_preset(getattr(ns, "preset", None) or "tiny-cpu"),
                                    getattr(ns, "preset", None) or "tiny-cpu"))
    p.set_defaults(run=run, _dests=dests)


def _local(path: str, what: str, preset: str) -> str:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"preset {preset!r}: the {what} {path!r} is not a local directory (nothing is "
                                f"downloaded); pass --{what.split()[0]} DIR")
    return path


def llm_width(cfg: ModelConfig, preset: str) -> int:
    if cfg.llm.name_or_path:
        from transformers import AutoConfig
        conf = AutoConfig.from_pretrained(_local(cfg.llm.name_or_path, "llm checkpoint", preset))
        return conf.get_text_config().hidden_size
    if "hidden_size" not in cfg.llm.arch:
        raise UserError(f"preset {preset!r}: llm.arch has no hidden_size")
    return int(cfg.llm.arch["hidden_size"])


def vision_dims(cfg: ModelConfig, preset: str) -> tuple[int, tuple[int, int]]:
    """(feature width, patch grid) of the preset's vision tower."""
    import torch
    from ..models.vision import VisionTower
    if cfg.vision.name_or_path:
        _local(cfg.vision.name_or_path, "vision checkpoint", preset)
    with torch.random.fork_rng():
        tower = VisionTower(cfg.vision)
    return tower.out_dim, tuple(tower.grid)


def connector_rows(cfg: ModelConfig, preset: str, options: dict | None = None) -> tuple[dict, list[dict]]:
    """Header (dims) and one row per registered connector: tokens, params, flops or the error it raised."""
    import torch
    from ..connectors import CONNECTORS, build_connector
    options = options or {}
    for name in options:
        if name not in CONNECTORS:
            raise unknown_name("connector in --connector-options", name, CONNECTORS)
    vis_dim, grid = vision_dims(cfg, preset)
    llm_dim = llm_width(cfg, preset)
    header = {"preset": preset, "grid": list(grid), "vision_dim": vis_dim, "llm_dim": llm_dim}
    rows = []
    for name in CONNECTORS:
        opts = options.get(name, cfg.connector.options if name == cfg.connector.name else {})
        try:
            with torch.random.fork_rng():
                c = build_connector(name, dict(opts), vis_dim, llm_dim, grid)
            rows.append({"connector": name, "tokens": c.num_tokens(), "dynamic": bool(c.dynamic),
                         "params": c.num_parameters(), "flops": int(c.flops(1)), "options": c.options_dict()})
        except (ValueError, TypeError) as e:
            rows.append({"connector": name, "error": str(e), "options": opts})
    return header, rows


def format_table(header: dict, rows: list[dict]) -> str:
    g = header["grid"]
    lines = [f"preset {header['preset']}: patch grid {g[0]}x{g[1]} ({g[0] * g[1]} patches), vision width "
             f"{header['vision_dim']}, LLM width {header['llm_dim']}; per image, forward",
             f"{'connector':<14} {'tokens':>8} {'params':>14} {'GFLOPs':>10}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['connector']:<14} {'n/a':>8}  {r['error']}")
        else:
            tokens = f"<={r['tokens']}" if r["dynamic"] else str(r["tokens"])
            lines.append(f"{r['connector']:<14} {tokens:>8} {r['params']:>14,} {r['flops'] / 1e9:>10.4f}")
    return "\n".join(lines)


def summary(cls) -> str:
    """The first sentence of a connector module's docstring, without its name prefix."""
    import sys
    doc = (sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return doc.split(": ", 1)[-1].split(". ")[0].rstrip(".")


def describe(name: str) -> str:
    """What connector ``name`` does, its options (type, default, meaning) and its stages."""
    import dataclasses
    import sys
    from ..connectors import CONNECTORS
    cls = CONNECTORS[name]
    doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    lines = [doc, "", "options (--model.connector.options '{{\"NAME\": VALUE, ...}}'):"]
    for f in dataclasses.fields(cls.Options):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"  {f.name} ({kind}, default {json.dumps(default)}): {f.metadata.get('help', '')}")
    stages = cls.stages(cls.Options())
    lines += ["", "stages:"]
    for stage in stages.values():
        frozen = f"; frozen: {', '.join(stage.frozen)}" if stage.frozen else ""
        runner = f" (runner {stage.runner})" if stage.runner != "lm" else ""
        lines.append(f"  {stage.name}{runner}: trains {', '.join(stage.trains)}{frozen}")
    if cls.pre_stage:
        lines.append(f"  runs first: {cls.pre_stage}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.describe:
        print(describe(args.describe))
        return 0
    cfg = validate(apply_overrides(get_preset(args.preset), args, args._dests))
    if not all(isinstance(v, dict) for v in args.connector_options.values()):
        raise UserError('--connector-options must be a JSON object of objects, e.g. {"qformer": {"layers": 2}}')
    header, rows = connector_rows(cfg.model, args.preset, args.connector_options)
    print(json.dumps({**header, "connectors": rows}, indent=2) if args.json else format_table(header, rows))
    return 0
