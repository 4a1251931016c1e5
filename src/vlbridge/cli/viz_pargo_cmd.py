"""`vlbridge viz masks` and `vlbridge viz windows`: figures of ParGo's attention masks and windows.

The connector options come from a saved model (``--model DIR``) or a preset (``--preset``, when its connector
is the one drawn), updated by ``--model.connector.options JSON``; the patch grid from ``--grid ROWSxCOLS`` or
from the model's/preset's vision encoder (built from its config; nothing is downloaded).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import UserError
from ..presets import PRESETS
from .args import json_object
from .parser import examples

DRAWABLE = ("pargo",)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connector", default="pargo", help="connector to draw (default: pargo; the only one with masks)")
    p.add_argument("--preset", default="tiny-cpu", choices=sorted(PRESETS),
                   help="preset giving the grid and, if it uses this connector, its options (default: tiny-cpu)")
    p.add_argument("--model", help="saved model dir: its connector options and grid instead of the preset's")
    p.add_argument("--model.connector.options", dest="options", type=json_object, default={}, metavar="JSON",
                   help="connector options as JSON, applied over the model's/preset's (e.g. '{\"tile\": [2, 2]}')")
    p.add_argument("--grid", help="patch grid ROWSxCOLS (e.g. 24x24) instead of the encoder's")


def add_kinds(kinds) -> None:
    m = kinds.add_parser("masks", help="PNGs of ParGo's cross- and self-attention masks per layer",
                         description="Write pargo_layer{L}.png (self- and cross-attention masks of layer L) and "
                                     "pargo_masks.png (all layers) into --out.",
                         epilog=examples("vlbridge viz masks --preset tiny-cpu --out figs",
                                         "vlbridge viz masks --model.connector.options '{\"tile\": [2, 2]}' --grid 8x8 "
                                         "--out figs"))
    _common(m)
    m.add_argument("--out", "--output-dir", required=True, help="output directory")
    m.set_defaults(run=run_masks)
    w = kinds.add_parser("windows", help="PNG of each ParGo partial token's window over an image",
                         description="Outline every partial token's window of patches on --image (resized to the "
                                     "grid the encoder sees).",
                         epilog=examples("vlbridge viz windows --image photo.png --model runs/pargo/final"))
    w.add_argument("--image", required=True, help="image file")
    _common(w)
    w.add_argument("--out", default="pargo_windows.png", help="output PNG path (default: pargo_windows.png)")
    w.set_defaults(run=run_windows)


def _parse_grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--grid must look like 24x24, got {text!r}") from None
    if rows < 1 or cols < 1:
        raise UserError(f"--grid must be positive, got {text!r}")
    return rows, cols


def resolve_geometry(args: argparse.Namespace):
    """(ParGoGeometry, description) from --model/--preset, --model.connector.options and --grid."""
    from ..config import VisionConfig, from_dict
    from ..connectors.pargo import ParGoOptions
    from ..connectors.pargo_windows import ParGoGeometry
    from ..presets import get_preset
    if args.connector not in DRAWABLE:
        raise UserError(f"connector {args.connector!r} has no attention masks to draw (drawable: {', '.join(DRAWABLE)})")
    if args.model:
        from ..models.vlm import read_model_meta
        meta = read_model_meta(args.model)
        name, options, vision, source = (meta["connector"]["name"], meta["connector"]["options"],
                                         from_dict(VisionConfig, meta["vision"]), str(args.model))
    else:
        cfg = get_preset(args.preset)
        name, options, vision, source = (cfg.model.connector.name, cfg.model.connector.options, cfg.model.vision,
                                         f"preset {args.preset}")
    options = {**(options if name == args.connector else {}), **args.options}
    known = {f.name for f in dataclasses.fields(ParGoOptions)}
    if set(options) - known:
        raise UserError(f"connector 'pargo' has no option(s) {sorted(set(options) - known)}; options: {sorted(known)}")
    grid = _parse_grid(args.grid) if args.grid else _encoder_grid(vision, source)
    resolved = ParGoOptions(**options)
    geometry = ParGoGeometry.from_options(resolved, grid)
    changed = {k: v for k, v in dataclasses.asdict(resolved).items() if v != getattr(ParGoOptions(), k)}
    text = ", ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()) or "default options"
    return geometry, f"pargo ({text}) on a {grid[0]}x{grid[1]} grid [{source}]"


def _encoder_grid(vision, source: str) -> tuple[int, int]:
    from ..models.vision import VisionTower
    if vision.name_or_path and not Path(vision.name_or_path).is_dir():
        raise UserError(f"{source}: the encoder {vision.name_or_path!r} is not a local dir; pass --grid ROWSxCOLS")
    return tuple(VisionTower(vision).grid)


def run_masks(args: argparse.Namespace) -> int:
    from ..viz.pargo_masks import mask_figures
    geometry, title = resolve_geometry(args)
    for path in mask_figures(geometry, args.out, title=title):
        print(f"wrote {path}")
    return 0


def run_windows(args: argparse.Namespace) -> int:
    from ..data.images import load_image
    from ..viz.pargo_masks import windows_figure
    geometry, _ = resolve_geometry(args)
    image = load_image(args.image, where=str(args.image))[0]
    print(f"wrote {windows_figure(image, geometry, args.out)}")
    return 0
