"""`vlbridge data shapes` / `shapes-docs`: write ShapesWorld (PNGs + LLaVA-style train/val/test JSON), or its
interleaved image-text documents (stories, few-shot episodes, caption/image pairs, QA)."""
from __future__ import annotations

import argparse
import json

from ..config import validate
from ..data.shapesworld import ShapesWorldConfig, generate
from .args import add_config_args, apply_overrides, print_config
from .parser import examples


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="generate built-in datasets")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    shapes = kinds.add_parser("shapes", help="ShapesWorld: procedural scenes with eleven VQA/grounding tasks",
                              description="Write ShapesWorld (images/*.png, train.json, val.json, test.json, "
                                          "scenes.json) into --out. Deterministic by seed.",
                              epilog=examples("vlbridge data shapes --out data/shapes --n 3000 --seed 0",
                                              "vlbridge data shapes --out data/small --n 300 --max-objects 6 "
                                              "--extra-tasks gcap,rec_neg"))
    shapes.add_argument("--out", "--output-dir", required=True, help="output directory (also the image folder)")
    shapes.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    shapes.set_defaults(run=run_shapes, _dests=add_config_args(shapes, ShapesWorldConfig))

    from ..data.shapesworld.documents import DocsConfig
    docs = kinds.add_parser("shapes-docs", help="ShapesWorld documents: stories, few-shot episodes, caption<->image, QA",
                            description="Write interleaved image-text documents (train.json, val.json), the test "
                                        "records `vlbridge eval` scores (QA, few-shot at each k: test.json), the "
                                        "image-generation test items (generation.json) and scenes.json into --out. "
                                        "Deterministic by seed. --scenes.* set the scenes (as `data shapes`; its n, "
                                        "seed and splits are not used here).")
    docs.epilog = examples("vlbridge data shapes-docs --out data/docs --n 3000 --seed 0",
                           "vlbridge data shapes-docs --out data/docs --n 600 --test-n 50 --mix '{\"story\": 2, \"fewshot\": 2}'")
    docs.add_argument("--out", "--output-dir", required=True, help="output directory (also the image folder)")
    docs.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    docs.set_defaults(run=run_docs, _dests=add_config_args(docs, DocsConfig))


def run_shapes(args: argparse.Namespace) -> int:
    cfg = validate(apply_overrides(ShapesWorldConfig(), args, args._dests))
    if args.print_config:
        print_config(cfg)
        return 0
    summary = generate(cfg, args.out)
    print(json.dumps({k: summary[k] for k in ("train", "val", "test")}), f"records written to {args.out}")
    return 0


def run_docs(args: argparse.Namespace) -> int:
    from ..data.shapesworld.documents import DocsConfig, generate_documents
    cfg = validate(apply_overrides(DocsConfig(), args, args._dests))
    if args.print_config:
        print_config(cfg)
        return 0
    summary = generate_documents(cfg, args.out)
    print(json.dumps(summary), f"written to {args.out}")
    return 0
