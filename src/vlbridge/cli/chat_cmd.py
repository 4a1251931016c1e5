"""`vlbridge chat`: ask a saved model about an image, one-shot (--prompt) or interactively."""
from __future__ import annotations

import argparse

from ..data.records import ImageError, Turn, load_image
from ..generate import GenerationConfig
from ..inference import Predictor, Query
from ..models.vlm import VLBridgeModel

HELP = "commands: /reset (new conversation), /image PATH (switch image), /quit"


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model about an image",
                       description="One-shot with --prompt; otherwise an interactive multi-turn chat. " + HELP)
    p.add_argument("--model", required=True, help="saved model dir (e.g. RUN/final)")
    p.add_argument("--image", help="image file (any mode; converted to RGB)")
    p.add_argument("--prompt", help="question; omit for an interactive session")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length budget (default: 64)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: 0.8)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = VLBridgeModel.from_pretrained(args.model)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                           temperature=args.temperature, top_p=args.top_p)
    predictor = Predictor(model, gen, seed=args.seed)
    image = load_image(args.image, where=args.image)[0] if args.image else None
    if args.prompt is not None:
        print(predictor.ask(args.prompt, [image] if image else []))
        return 0
    print(HELP)
    turns: list[Turn] = []
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            return 0
        if not text:
            continue
        if text == "/quit":
            return 0
        if text == "/reset":
            turns = []
            continue
        if text.startswith("/image "):
            path = text[7:].strip()
            try:
                image, turns = load_image(path, where=path)[0], []
            except (ImageError, OSError) as e:
                print(f"cannot use {path}: {e}")
            continue
        if not turns and image is not None and "<image>" not in text:
            text = "<image>\n" + text
        turns.append(Turn("user", text))
        answer = predictor.answer([Query(turns, [image] if image is not None else [])])[0]
        turns.append(Turn("assistant", answer))
        print(f"model> {answer}")
