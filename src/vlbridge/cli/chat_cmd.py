"""`vlbridge chat`: ask a saved model about one or more images, one-shot (--prompt) or interactively."""
from __future__ import annotations

import argparse

from ..data.images import ImageError, load_image
from ..data.records import Turn
from ..generate import GenerationConfig
from ..inference import Predictor, Query
from ..models.vlm import VLBridgeModel

HELP = "commands: /reset (new conversation), /image PATH (switch image), /quit"


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model about an image",
                       description="One-shot with --prompt; otherwise an interactive multi-turn chat. " + HELP)
    p.add_argument("--model", required=True, help="saved model dir (e.g. RUN/final)")
    p.add_argument("--image", action="append", default=[],
                   help="image file (any mode; converted to RGB); repeat for several, placed at the prompt's "
                        "<image> marks or, without them, before it")
    p.add_argument("--prompt", help="question; omit for an interactive session")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length budget (default: 64)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: 0.8)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--grounded", action="store_true",
                   help="grounded answer: print each phrase with its box and draw them into a PNG (--grounded-out); "
                        "without --prompt asks for a grounded caption")
    p.add_argument("--region", metavar="X1,Y1,X2,Y2",
                   help="ask about a region (normalised or pixel corners); without --prompt asks what the object "
                        "there is; put <region> in --prompt to place the box in your question")
    p.add_argument("--grounded-out", metavar="PNG",
                   help="where --grounded/--region draw the boxes (default: IMAGE-STEM_grounded.png here)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = VLBridgeModel.from_pretrained(args.model)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                           temperature=args.temperature, top_p=args.top_p)
    predictor = Predictor(model, gen, seed=args.seed)
    images = [load_image(path, where=path)[0] for path in args.image]
    if args.grounded or args.region:
        if len(images) > 1:
            raise ValueError("--grounded and --region take one --image")
        return run_grounded(args, predictor, images[0] if images else None)
    if args.prompt is not None:
        print(predictor.ask(args.prompt, images))
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
                images, turns = [load_image(path, where=path)[0]], []
            except (ImageError, OSError) as e:
                print(f"cannot use {path}: {e}")
            continue
        if not turns and images and "<image>" not in text:
            text = "<image>\n" * len(images) + text
        turns.append(Turn("user", text))
        answer = predictor.answer([Query(turns, images)])[0]
        turns.append(Turn("assistant", answer))
        print(f"model> {answer}")


def run_grounded(args: argparse.Namespace, predictor: Predictor, image) -> int:
    """One grounded question: print the answer with each phrase's box and draw them into a PNG."""
    from pathlib import Path

    from ..recipes.groma.grounded_chat import describe, draw_grounding, grounded_prompt, parse_region, phrase_boxes
    if image is None:
        raise ValueError("--grounded and --region need --image")
    region = parse_region(args.region, image.size) if args.region else None
    prompt = grounded_prompt(args.prompt, region)
    answer = predictor.ask(prompt, [image])
    pairs = phrase_boxes(answer, fallback=prompt if len(prompt) <= 40 else prompt[:37] + "...")
    if region is not None and not pairs:
        pairs = [(answer, region)]                       # a region question: the answer labels the region
    print(f"you> {prompt}")
    print("model> " + describe(answer, pairs))
    out = draw_grounding(image, pairs, args.grounded_out or f"{Path(args.image[0]).stem}_grounded.png", region=region)
    print(f"boxes drawn in {out}")
    return 0
