"""`vlbridge generate-image`: text -> image with a trained LaVIT model (the `lavit` connector).

The LLM writes the image's code ids after [IMG] (text ids suppressed), the tokenizer's feature decoder and
conv pixel decoder paint them. Several prompts (--prompt repeated) or --n samples per prompt give a grid.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .device_args import add_device_flags, load_model
from .parser import examples, non_negative_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("generate-image", help="generate an image from text with a LaVIT model",
                       description=__doc__.split("\n\n")[0],
                       epilog=examples("vlbridge generate-image --model RUN/final --prompt "
                                       "'a red circle above a small blue square' --out img.png",
                                       "vlbridge generate-image --model RUN/final --prompt 'a red circle' "
                                       "--prompt 'a blue square' --n 4 --out grid.png --check"))
    p.add_argument("--model", required=True, help="saved LaVIT model dir (e.g. RUN/final)")
    p.add_argument("--prompt", required=True, action="append",
                   help="what to draw, e.g. 'a red circle above a small blue square' (repeat for several)")
    p.add_argument("--out", required=True, help="output PNG (a grid when there are several images)")
    p.add_argument("--n", type=positive_int, default=1, help="images per prompt (default: 1; >1 implies --sample)")
    p.add_argument("--cfg-scale", type=non_negative_float, default=3.0,
                   help="classifier-free guidance scale (1 = off; default: 3)")
    p.add_argument("--sample", action="store_true", help="sample codes instead of greedy decoding")
    p.add_argument("--temperature", type=non_negative_float, default=1.0, help="sampling temperature (default: 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely codes (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--size", type=positive_int, default=256, help="side of each saved image in pixels (default: 256)")
    p.add_argument("--check", action="store_true", help="print what the ShapesWorld checker sees in each image")
    add_device_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..data.scene_captions import parse_prompt
    from ..eval.image_checker import agreement, detect_objects
    from ..lavit.grid import sample_grid
    from ..recipes.lavit.image_generation import ImageGenConfig, generate_images
    model = load_model(args)
    if model.cfg.connector.name != "lavit":
        raise UserError(f"{args.model}: connector is {model.cfg.connector.name!r}; image generation needs a "
                         "LaVIT model (connector 'lavit')")
    gen = ImageGenConfig(cfg_scale=args.cfg_scale, do_sample=args.sample or args.n > 1, temperature=args.temperature,
                         top_k=args.top_k, seed=args.seed)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    images, codes = generate_images(model, prompts, gen)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(images) == 1:
        images[0].resize((args.size, args.size), Image.NEAREST).save(out)
    else:
        sample_grid([[im] for im in images], prompts, ["generated"], per_line=4).save(out)
    for prompt, im, c in zip(prompts, images, codes):
        line = f"{prompt!r}: {len(c)} visual tokens"
        if args.check:
            found = detect_objects(im)
            seen = ", ".join(f"{d.size} {d.color} {d.shape}" for d in found) or "nothing"
            try:
                verdict = "agrees" if agreement(parse_prompt(prompt), found).full else "disagrees"
            except ValueError:
                verdict = "prompt not in the ShapesWorld grammar"
            line += f"; checker sees {seen} ({verdict})"
        print(line)
    print(f"image: {out}")
    return 0
