"""`vlbridge chat`: ask a saved model about an image (or several, one-shot), one-shot (--prompt) or interactively."""
from __future__ import annotations

import argparse
import sys

from ..data.images import load_image
from ..errors import UserError
from ..generate import GenerationConfig
from ..inference import Predictor
from .chat_session import ChatSession, commands_help
from .device_args import add_device_flags, load_model
from .parser import examples, non_negative_float, positive_int


def top_p(text: str) -> float:
    value = non_negative_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model about an image",
                       description="One-shot with --prompt; otherwise an interactive multi-turn chat (with piped "
                                   "input: one answer per line, no prompts).\n\n" + commands_help(),
                       epilog=examples("vlbridge chat --model runs/demo/final --image photo.png",
                                       "vlbridge chat --model runs/demo/final --image photo.png --prompt "
                                       "'What color is the circle?'",
                                       "printf 'What shape is it?\\nAnd its color?\\n' | vlbridge chat --model "
                                       "runs/demo/final --image photo.png",
                                       "vlbridge chat --model runs/groma/final --image photo.png --grounded"))
    p.add_argument("--model", required=True, help="saved model dir (e.g. RUN/final)")
    p.add_argument("--image", action="append", default=[],
                   help="image file (any mode; converted to RGB); with --prompt repeat it for several, placed at "
                        "the prompt's <image> marks or, without them, before it")
    p.add_argument("--prompt", help="question; omit for an interactive session")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="answer length budget (default: 64)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=non_negative_float, default=0.8, help="sampling temperature (default: 0.8)")
    p.add_argument("--top-p", type=top_p, default=0.95, help="nucleus sampling mass (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--grounded", action="store_true",
                   help="grounded answer: print each phrase with its box and draw them into a PNG (--grounded-out); "
                        "without --prompt asks for a grounded caption")
    p.add_argument("--region", metavar="X1,Y1,X2,Y2",
                   help="ask about a region (normalised or pixel corners); without --prompt asks what the object "
                        "there is; put <region> in --prompt to place the box in your question")
    p.add_argument("--task-type", metavar="TYPE",
                   help="the task type the model routes the questions by (a mixture of adapters, e.g. lion's "
                        "'image' or 'region'; default: REC's type with --grounded/--region, else the model's default)")
    p.add_argument("--grounded-out", metavar="PNG",
                   help="where --grounded/--region draw the boxes (default: IMAGE-STEM_grounded.png here)")
    add_device_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if (args.grounded or args.region) and not args.image:
        raise UserError("--grounded and --region need --image")
    if len(args.image) > 1 and (args.prompt is None or args.grounded or args.region):
        raise UserError("several --image need --prompt (the interactive and grounded chats take one image)")
    images = [load_image(path, where=path)[0] for path in args.image]
    image = images[0] if images else None
    model = load_model(args)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                           temperature=args.temperature, top_p=args.top_p)
    task_type = args.task_type
    if task_type is None and (args.grounded or args.region):
        mapped = model.connector.task_types(["rec"])             # a region question routes as REC does
        task_type = mapped[0] if mapped else None
    predictor = Predictor(model, gen, seed=args.seed, task_type=task_type)
    if args.grounded or args.region:
        return run_grounded(args, predictor, image)
    if args.prompt is not None:
        if image is None:
            print("note: no --image: the model answers from text alone", file=sys.stderr)
        print(predictor.ask(args.prompt, images))
        return 0
    return ChatSession(predictor, image, args.image[0] if args.image else None).run()


def run_grounded(args: argparse.Namespace, predictor: Predictor, image) -> int:
    """One grounded question: print the answer with each phrase's box and draw them into a PNG."""
    from pathlib import Path

    from ..recipes.groma.grounded_chat import describe, draw_grounding, grounded_prompt, parse_region, phrase_boxes
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
