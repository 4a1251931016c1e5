"""`vlbridge pretrain-vision`: dense box-attribute pretraining of a from-scratch vision encoder."""
from __future__ import annotations

import argparse
import json

from ..config import validate
from ..presets import PRESETS, get_preset
from .args import add_config_args, add_overwrite_flag, apply_overrides, print_config, show_defaults_of
from .parser import examples


def add_parser(sub) -> None:
    from ..recipes.vision_pretrain import VisionPretrainConfig
    p = sub.add_parser("pretrain-vision", help="pretrain a from-scratch vision encoder on box annotations",
                       description="Stands in for CLIP-style pretraining where no checkpoint can be downloaded: "
                                   "each patch learns the attributes of the object under it. Writes a Hugging Face "
                                   "vision model dir for `vlbridge train --vision DIR`. The encoder architecture "
                                   "(--model.vision.*) comes from --preset; values in brackets are the ones the "
                                   "run starts from.",
                       epilog=examples("vlbridge pretrain-vision --annotations data/shapes/scenes.json "
                                       "--out runs/demo/vision",
                                       "vlbridge pretrain-vision --annotations data/shapes/scenes.json --out VISION "
                                       "--attributes shape,color,glyph --steps 600"))
    p.add_argument("--preset", default="tiny-cpu", choices=sorted(PRESETS),
                   help="take the vision architecture from this preset (default: tiny-cpu)")
    add_overwrite_flag(p, "encoder")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    dests = add_config_args(p, VisionPretrainConfig, aliases={"out": ["--out", "--output-dir"]},
                            required=("annotations", "out"), rename={"vision.": "model.vision."},
                            choices={"split": ("train", "val", "test")})
    show_defaults_of(p, lambda ns: (start(ns), getattr(ns, "preset", None) or "tiny-cpu"))
    p.set_defaults(run=run, _dests=dests)


def start(args: argparse.Namespace):
    from ..recipes.vision_pretrain import VisionPretrainConfig
    return VisionPretrainConfig(vision=get_preset(getattr(args, "preset", None) or "tiny-cpu").model.vision)


def run(args: argparse.Namespace) -> int:
    from ..train.output_dir import check_output_dir
    from ..recipes.vision_pretrain import pretrain_vision
    cfg = validate(apply_overrides(start(args), args, args._dests))
    if args.print_config:
        print_config(cfg)
        return 0
    check_output_dir(cfg.out, overwrite=args.overwrite)
    out = pretrain_vision(cfg)
    meta = json.loads((out / "vision_pretrain.json").read_text())
    print(f"held-out patch accuracy: {meta['held_out_patch_accuracy']}")
    print(f"vision encoder: {out}")
    return 0
