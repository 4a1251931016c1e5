"""`vlbridge generate-image`: an image from a trained LaVIT model (text) or Emu model (text and images, in context).

LaVIT: the LLM writes the image's code ids after [IMG] (text ids suppressed), the tokenizer's feature decoder
and conv pixel decoder paint them. Emu: the prompt is a document (a caption, or a story's frames and captions
with an --image per frame); the LLM regresses M embeddings after [IMG] and the connector's decoder paints them.
Several prompts (--prompt repeated) or --n samples per prompt give a grid.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .device_args import add_device_flags, load_model
from .parser import examples, non_negative_float, positive_int

DEFAULT_CFG = {"lavit": 3.0, "emu": 1.0}


def add_parser(sub) -> None:
    p = sub.add_parser("generate-image", help="generate an image with a LaVIT or Emu model",
                       description=__doc__.split("\n\n")[0],
                       epilog=examples("vlbridge generate-image --model RUN/final --prompt "
                                       "'a red circle above a small blue square' --out img.png",
                                       "vlbridge generate-image --model RUN/final --prompt 'a red circle' "
                                       "--prompt 'a blue square' --n 4 --out grid.png --check",
                                       "vlbridge generate-image --model EMU/gen --image f0.png --image f1.png "
                                       "--prompt $'<image>\\na red circle\\n<image>\\na red circle' --out next.png"))
    p.add_argument("--model", required=True, help="saved LaVIT or Emu model dir (Emu: with a trained decoder)")
    p.add_argument("--prompt", required=True, action="append",
                   help="what to draw, e.g. 'a red circle above a small blue square' (repeat for several); for Emu "
                        "a document whose <image> marks take the --image files in order (missing marks go first)")
    p.add_argument("--image", action="append", default=[],
                   help="Emu: an image of the prompt (repeat for several; every prompt gets them)")
    p.add_argument("--out", required=True, help="output PNG (a grid when there are several images)")
    p.add_argument("--n", type=positive_int, default=1, help="images per prompt (default: 1; >1 implies --sample)")
    p.add_argument("--cfg-scale", type=non_negative_float, default=None,
                   help="classifier-free guidance scale (1 = off; default: 3 for LaVIT, 1 for Emu)")
    p.add_argument("--sample", action="store_true", help="LaVIT: sample codes instead of greedy decoding")
    p.add_argument("--temperature", type=non_negative_float, default=1.0,
                   help="LaVIT: sampling temperature (default: 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="LaVIT: sample from the k most likely codes (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--size", type=positive_int, default=256, help="side of each saved image in pixels (default: 256)")
    p.add_argument("--check", action="store_true", help="print what the ShapesWorld checker sees in each image")
    add_device_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..data.images import load_image
    from ..data.scene_captions import parse_prompt
    from ..eval.image_checker import agreement, detect_objects
    from ..lavit.grid import sample_grid
    model = load_model(args)
    kind = model.cfg.connector.name
    if kind not in DEFAULT_CFG:
        raise UserError(f"{args.model}: connector is {kind!r}; image generation needs a LaVIT model (connector "
                        "'lavit') or an Emu model (connector 'emu')")
    scale = DEFAULT_CFG[kind] if args.cfg_scale is None else args.cfg_scale
    prompts = [p for p in args.prompt for _ in range(args.n)]
    if kind == "lavit":
        if args.image:
            raise UserError("--image: a LaVIT model draws from text only (an Emu model takes images in context)")
        from ..recipes.lavit.image_generation import ImageGenConfig, generate_images
        gen = ImageGenConfig(cfg_scale=scale, do_sample=args.sample or args.n > 1, temperature=args.temperature,
                             top_k=args.top_k, seed=args.seed)
        images, codes = generate_images(model, prompts, gen)
        notes = [f"{len(c)} visual tokens" for c in codes]
    else:
        from ..recipes.emu.image_generation import EmuGenConfig, generate_images
        context = [load_image(path, where=path)[0] for path in args.image]
        try:
            samples = [generate_images(model, args.prompt, [context] * len(args.prompt),
                                       EmuGenConfig(cfg_scale=scale, seed=args.seed + k)) for k in range(args.n)]
        except ValueError as e:
            raise UserError(str(e)) from None
        images = [samples[k][i] for i in range(len(args.prompt)) for k in range(args.n)]   # one decoder seed each
        notes = [f"{model.connector.num_tokens()} regressed embeddings"] * len(images)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(images) == 1:
        images[0].resize((args.size, args.size), Image.NEAREST).save(out)
    else:
        sample_grid([[im] for im in images], prompts, ["generated"], per_line=4).save(out)
    for prompt, im, note in zip(prompts, images, notes):
        line = f"{prompt!r}: {note}"
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
