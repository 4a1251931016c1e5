"""The `vlbridge` command: one entry point, a subcommand per job.

    vlbridge data shapes --out DIR --n N --seed S      generate ShapesWorld
    vlbridge pretrain-vision --annotations DIR/scenes.json --out VISION_DIR   (no downloadable encoder here)
    vlbridge train --preset tiny-cpu --data DIR --out RUN_DIR [--steps N] [--stage align|instruct] [--resume]
    vlbridge eval  --model DIR --data test.json        per-task accuracy, predictions, reports
    vlbridge chat  --model DIR --image PATH [--prompt TEXT]
    vlbridge viz answers --model DIR --data test.json --out PNG
    vlbridge connectors [--preset NAME]                 connectors: tokens, parameters, FLOPs for a preset
    vlbridge lavit tokenizer|prepare|measure ...       LaVIT: visual tokenizer stage, generation data, figures
    vlbridge emu decoder|measure ...                   Emu: visual decoder stage, generation figures
    vlbridge generate-image --model DIR --prompt TEXT [--image A ...] --out PNG   an image with a LaVIT or Emu model
    vlbridge arena --connectors mlp,qformer,... --steps N --out RUN   compare connectors (table + plots)

User errors (bad data, missing files, bad options) print one clear line and exit 2; set VLBRIDGE_DEBUG=1
for the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..data.records import DataError
from . import (arena_cmd, chat_cmd, connectors_cmd, data_cmd, emu_cmd, eval_cmd, generate_image_cmd, lavit_cmd,
               pretrain_vision_cmd, train_cmd, viz_cmd)

COMMANDS = (data_cmd, pretrain_vision_cmd, train_cmd, eval_cmd, chat_cmd, viz_cmd, arena_cmd, connectors_cmd, lavit_cmd,
            emu_cmd, generate_image_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlbridge", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (DataError, ValueError, FileNotFoundError, OSError) as e:
        if os.environ.get("VLBRIDGE_DEBUG"):
            raise
        print(f"vlbridge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
