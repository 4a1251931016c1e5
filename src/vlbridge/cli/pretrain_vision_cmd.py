"""`vlbridge pretrain-vision`: dense box-attribute pretraining of a from-scratch vision encoder."""
from __future__ import annotations

import argparse
import json

from ..presets import PRESETS, get_preset
from .args import add_config_args, apply_overrides


def add_parser(sub) -> None:
    from ..recipes.vision_pretrain import VisionPretrainConfig
    p = sub.add_parser("pretrain-vision", help="pretrain a from-scratch vision encoder on box annotations",
                       description="Stands in for CLIP-style pretraining where no checkpoint can be downloaded: "
                                   "each patch learns the attributes of the object under it. Writes a Hugging Face "
                                   "vision model dir for --model.vision.name_or_path.")
    p.add_argument("--preset", default="tiny-cpu", choices=sorted(PRESETS),
                   help="take the vision architecture from this preset (default: tiny-cpu)")
    p.set_defaults(run=run, _dests=add_config_args(p, VisionPretrainConfig))


def run(args: argparse.Namespace) -> int:
    from ..recipes.vision_pretrain import VisionPretrainConfig, pretrain_vision
    cfg = VisionPretrainConfig(vision=get_preset(args.preset).model.vision)
    cfg = apply_overrides(cfg, args, args._dests)
    if not cfg.annotations or not cfg.out:
        raise ValueError("--annotations and --out are required")
    out = pretrain_vision(cfg)
    meta = json.loads((out / "vision_pretrain.json").read_text())
    print(f"held-out patch accuracy: {meta['held_out_patch_accuracy']}")
    print(f"vision encoder: {out}")
    return 0
