"""The `vlbridge` command: one entry point, a subcommand per job.

examples:
  vlbridge data shapes --out data/shapes --n 3000
  vlbridge pretrain-vision --annotations data/shapes/scenes.json --out runs/demo/vision
  vlbridge train --preset tiny-cpu --data data/shapes --out runs/demo --vision runs/demo/vision
  vlbridge plan --preset clip-qwen2 --llm Qwen/Qwen2-7B-Instruct --strategy fsdp --nproc 8   (memory per GPU)
  vlbridge eval --model runs/demo/final --data data/shapes/test.json
  vlbridge chat --model runs/demo/final --image photo.png        (/help lists the chat commands)
  vlbridge viz answers --model runs/demo/final --data data/shapes/test.json --out answers.png
  vlbridge connectors --preset tiny-cpu                         (tokens, parameters, FLOPs per connector)
  vlbridge arena --connectors mlp,qformer,pargo --out runs/arena
  vlbridge lavit tokenizer --annotations data/shapes/scenes.json --vision runs/demo/vision --out runs/tok
  vlbridge data shapes-docs --out data/docs --n 3000                (interleaved image-text documents)
  vlbridge emu decoder --model RUN/final --data data/docs --out RUN/gen
  vlbridge generate-image --model RUN/final --prompt "a red circle" --out img.png
  vlbridge recipe lion --data data/lion --out runs/lion          (LION's three stages, each saved and evaluated)
  vlbridge lion tagger --data data/lion --vision runs/lion/vision --out runs/lion/tagger
  vlbridge serve --model runs/demo/final                        (OpenAI-compatible server + web demo)
  vlbridge export --model RUN/final --format hf-llava --out DIR (a transformers LLaVA checkpoint)

Every option takes - or _ between words (--batch-size = --batch_size); `vlbridge COMMAND --help` lists a
command's options with the values it starts from. Mistakes in what you pass (flags, files, data) print one
line and exit 2; set VLBRIDGE_DEBUG=1 to see their traceback. Anything else is a bug and prints its
traceback.
"""
from __future__ import annotations

import sys

from .. import __version__
from ..errors import UserError
from . import (arena_cmd, chat_cmd, connectors_cmd, data_cmd, emu_cmd, eval_cmd, generate_image_cmd, lavit_cmd,
               lion_cmd, plan_cmd, pretrain_vision_cmd, recipe_cmd, train_cmd, viz_cmd)
from . import export_cmd, serve_cmd
from .parser import Parser, debug

COMMANDS = (data_cmd, pretrain_vision_cmd, train_cmd, plan_cmd, eval_cmd, chat_cmd, viz_cmd, arena_cmd, connectors_cmd, lavit_cmd,
            generate_image_cmd, recipe_cmd, lion_cmd, emu_cmd)
COMMANDS += (serve_cmd, export_cmd)


def version() -> str:
    import platform

    import torch
    import transformers
    return (f"vlbridge {__version__} (python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__})")


def build_parser() -> Parser:
    first, _, rest = __doc__.partition("\n\n")
    parser = Parser(prog="vlbridge", description=first, epilog=rest)
    parser.add_argument("--version", action="version", version=version(), help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = args._parser.prog
    try:
        return args.run(args) or 0
    except (UserError, OSError) as e:       # the input's fault: missing files, bad data, bad options
        if debug():
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        print(f"{prog}: internal error (a bug, not a problem with your input); please report it with the "
              f"traceback below", file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(main())
