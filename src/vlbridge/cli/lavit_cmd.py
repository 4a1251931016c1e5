"""`vlbridge lavit ...`: the LaVIT pipeline steps that are not plain training.

    vlbridge lavit tokenizer --annotations DATA/scenes.json --vision VISION_DIR --out TOK_DIR
        the `tokenizer` stage: selector + merger + decoder (continuous, then VQ), then the pixel decoder
    vlbridge lavit prepare --tokenizer TOK_DIR --data DATA --out INIT_DIR
        text->image records (DATA/lavit_train.json = understanding + generation records) and the initial
        model (tiny-cpu LLM + lavit connector holding the trained tokenizer) for `vlbridge train --init-from`
    vlbridge lavit measure --model RUN/final --data DATA --out DIR
        the closing-note figures: kept tokens, reconstruction, codebook, text->image agreement, sample grid

The whole pipeline on ShapesWorld (CPU, one thread):

    vlbridge data shapes --out DATA --n 3000
    vlbridge pretrain-vision --annotations DATA/scenes.json --out RUN/vision
    vlbridge lavit tokenizer --annotations DATA/scenes.json --vision RUN/vision --out RUN/tok
    vlbridge lavit prepare --tokenizer RUN/tok --data DATA --out RUN/init --captions-per-image 1
    vlbridge train --init-from RUN/init --data DATA --data.train-file lavit_train.json \
        --train.train-vision false --steps 400 --out RUN/unified
    vlbridge eval --model RUN/unified/final --data DATA/test.json
    vlbridge lavit measure --model RUN/unified/final --data DATA --out RUN/measure
    vlbridge generate-image --model RUN/unified/final --prompt "a red circle above a small blue square" --out img.png
"""
from __future__ import annotations

import argparse
import json

from ..config import validate
from .args import add_config_args, add_overwrite_flag, apply_overrides
from .parser import examples

OUT = {"out": ["--out", "--output-dir"]}


def add_parser(sub) -> None:
    from ..recipes.lavit.tokenizer_stage import TokenizerTrainConfig
    from ..lavit.visual_tokenizer import PLACEMENTS
    from ..presets import PRESETS
    first, _, rest = __doc__.partition("\n\n")
    p = sub.add_parser("lavit", help="LaVIT: train the dynamic visual tokenizer, prepare generation data, measure",
                       description=first, epilog=rest)
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")

    tok = steps.add_parser("tokenizer", help="train the dynamic visual tokenizer and its pixel decoder",
                           description="Phase 1: reconstruct all patch features without quantisation; phase 2: with "
                                       "the EMA quantizer; phase 3: the conv pixel decoder. Writes TOK_DIR with "
                                       "config.json, model.safetensors, metrics.json.",
                           epilog=examples("vlbridge lavit tokenizer --annotations DATA/scenes.json --vision "
                                           "RUN/vision --out RUN/tok"))
    add_overwrite_flag(tok, "tokenizer")
    tok.set_defaults(run=run_tokenizer, _dests=add_config_args(
        tok, TokenizerTrainConfig, aliases=OUT, required=("annotations", "vision", "out"),
        choices={"placement_continuous": PLACEMENTS, "placement_quantized": PLACEMENTS,
                 "recon_weighting": ("uniform", "salience")}))

    from ..recipes.lavit.prepare import PrepareConfig
    prep = steps.add_parser("prepare", help="text->image records + the initial LaVIT model for `vlbridge train`",
                            description="Writes DATA/<train_file> (understanding records + 'Draw <caption>' -> "
                                        "[IMG] codes [/IMG] records) and OUT, a model to pass to `vlbridge train "
                                        "--init-from OUT --data DATA --data.train-file <train_file>`.",
                            epilog=examples("vlbridge lavit prepare --tokenizer RUN/tok --data DATA --out RUN/init"))
    add_overwrite_flag(prep, "model")
    prep.set_defaults(run=run_prepare, _dests=add_config_args(
        prep, PrepareConfig, aliases=OUT, required=("tokenizer", "data", "out"),
        choices={"preset": tuple(PRESETS), "code_embeddings": ("random", "codebook")}))

    from ..recipes.lavit.measure import MeasureConfig
    meas = steps.add_parser("measure", help="kept tokens, reconstruction, codebook, text->image agreement, grid",
                            description="Figures of a trained LaVIT model on a ShapesWorld split; writes "
                                        "metrics.json, summary.md and samples.png into --out.",
                            epilog=examples("vlbridge lavit measure --model RUN/unified/final --data DATA "
                                            "--out RUN/measure"))
    meas.set_defaults(run=run_measure, _dests=add_config_args(
        meas, MeasureConfig, aliases=OUT, required=("model", "data", "out"),
        choices={"split": ("train", "val", "test")}))


def run_tokenizer(args: argparse.Namespace) -> int:
    from ..recipes.lavit.tokenizer_stage import TokenizerTrainConfig, train_tokenizer
    from ..train.output_dir import check_output_dir
    cfg = validate(apply_overrides(TokenizerTrainConfig(), args, args._dests))
    check_output_dir(cfg.out, overwrite=args.overwrite)
    out = train_tokenizer(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    print(json.dumps(metrics, indent=1))
    print(f"tokenizer: {out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from ..recipes.lavit.prepare import PrepareConfig, prepare
    from ..train.output_dir import check_output_dir
    cfg = validate(apply_overrides(PrepareConfig(), args, args._dests))
    check_output_dir(cfg.out, overwrite=args.overwrite)
    print(json.dumps(prepare(cfg), indent=1))
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from ..recipes.lavit.measure import MeasureConfig, measure, summary_markdown
    cfg = validate(apply_overrides(MeasureConfig(), args, args._dests))
    figures = measure(cfg)
    print(summary_markdown(figures, cfg))
    print(f"report: {cfg.out}")
    return 0
