"""`vlbridge lion ...`: LION's steps that are not plain training.

    vlbridge lion tagger --data DATA --vision VISION_DIR --out TAGGER
        train the multi-label tagger (RAM's stand-in) on the frozen encoder; per-tag precision/recall on val
    vlbridge lion tags --tagger TAGGER --data DATA --out OUT --tags.mode soft --tags.noise 0.2
        tagged copies of DATA's train/val/test.json (read them with --data.image_folder DATA / --image-folder DATA)

The whole schedule is `vlbridge recipe lion --data DATA --out RUN` (it runs the tagger itself with --tags.mode).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from .args import add_config_args, apply_overrides
from .parser import examples

OUT = {"out": ["--out", "--output-dir"]}


def add_parser(sub) -> None:
    from ..lion.tags import TagsConfig
    from ..recipes.lion.tagger_stage import TaggerConfig
    p = sub.add_parser("lion", help="LION: train the image tagger, write tagged data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")
    tagger = steps.add_parser("tagger", help="train the multi-label image tagger on a frozen encoder",
                              description="Trains on DATA/scenes.json's train split (tags: colours, shapes, sizes, "
                                          "glyph) and prints per-tag precision/recall on its val split.",
                              epilog=examples("vlbridge lion tagger --data data/lion --vision runs/lion/vision "
                                              "--out runs/lion/tagger"))
    tagger.set_defaults(run=run_tagger, _dests=add_config_args(tagger, TaggerConfig, aliases=OUT))
    tags = steps.add_parser("tags", help="write tagged copies of a dataset's record files",
                            description="Each record's image is tagged; the tag sentence goes before the question "
                                        "of the turn holding the image ('soft': with the learned <soft> token).",
                            epilog=examples("vlbridge lion tags --tagger runs/lion/tagger --data data/lion "
                                            "--out data/lion_soft --tags.mode soft"))
    tags.add_argument("--tagger", required=True, help="tagger dir (`vlbridge lion tagger`)")
    tags.add_argument("--data", required=True, help="dataset dir holding the record files (and scenes.json)")
    tags.add_argument("--out", "--output-dir", required=True, help="output dir for the tagged files")
    tags.add_argument("--files", default="train.json,val.json,test.json",
                      help="record files to tag (default: train.json,val.json,test.json)")
    tags.set_defaults(run=run_tags, _dests=add_config_args(tags, TagsConfig, prefix="tags."))


def run_tagger(args: argparse.Namespace) -> int:
    from ..recipes.lion.tagger_stage import TaggerConfig, metrics_table, train_tagger
    cfg = apply_overrides(TaggerConfig(), args, args._dests)
    out = train_tagger(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    if metrics["val"]:
        print(f"val split, threshold {metrics['val']['threshold']}:")
        print(metrics_table(metrics["val"]))
    print(f"tagger: {out}")
    return 0


def run_tags(args: argparse.Namespace) -> int:
    from ..lion.tags import TagsConfig
    from ..recipes.lion.tag_data import tag_dataset
    cfg = apply_overrides(SimpleNamespace(tags=TagsConfig()), args, args._dests).tags
    cfg.__post_init__()                                   # validate the values given as flags
    stats = tag_dataset(Path(args.data), Path(args.out), Path(args.tagger), cfg, tuple(args.files.split(",")))
    print(json.dumps(stats, indent=1))
    return 0
