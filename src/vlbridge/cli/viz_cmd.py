"""`vlbridge viz`: figures. `viz answers` draws test images with the model's answers and boxes;
`viz masks` / `viz windows` draw ParGo's attention masks and windows (``viz_pargo_cmd.py``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.images import load_image
from ..data.records import SkipReport, load_records
from ..errors import UserError
from ..generate import GenerationConfig
from ..inference import Predictor, Query
from ..models.vlm import VLBridgeModel
from . import viz_pargo_cmd
from .parser import examples, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("viz", help="figures (answers on test images, ParGo masks and windows)")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    a = kinds.add_parser("answers", help="PNG of test images with the model's answers to their questions",
                         description="Pick images from a LLaVA-style JSON, ask the model every question recorded "
                                     "for each, and draw image + questions + answers (+ predicted boxes).",
                         epilog=examples("vlbridge viz answers --model runs/demo/final --data data/shapes/test.json "
                                         "--out answers.png"))
    a.add_argument("--model", required=True, help="saved model dir")
    a.add_argument("--data", required=True, help="LLaVA-style JSON (e.g. test.json)")
    a.add_argument("--out", required=True, help="output PNG path")
    a.add_argument("--images", type=positive_int, default=3, help="how many images (default: 3)")
    a.add_argument("--start", type=int, default=0, help="index of the first image to show (default: 0)")
    a.add_argument("--questions", type=positive_int, default=6, help="questions per image at most (default: 6)")
    a.set_defaults(run=run_answers)
    viz_pargo_cmd.add_kinds(kinds)


def run_answers(args: argparse.Namespace) -> int:
    from ..viz.answers import answers_figure, group_by_image
    model = VLBridgeModel.from_pretrained(args.model)
    records = load_records(args.data, on_error="skip", report=SkipReport())
    groups = list(group_by_image(records).items())[args.start:args.start + args.images]
    if not groups:
        raise UserError(f"{args.data}: no single-image records from image #{args.start} on to show")
    predictor = Predictor(model, GenerationConfig(max_new_tokens=40))
    images, qa = [], []
    for path, recs in groups:
        image = load_image(path, where=str(path))[0]
        recs = recs[: args.questions]
        answers = predictor.answer([Query(r.turns[:-1], [image]) for r in recs])
        images.append(image)
        qa.append([(r.turns[-2].text, ans, r.turns[-1].text) for r, ans in zip(recs, answers)])
    out = answers_figure(images, qa, args.out, title=f"{Path(args.model)} on {Path(args.data).name}")
    print(f"wrote {out}")
    return 0
