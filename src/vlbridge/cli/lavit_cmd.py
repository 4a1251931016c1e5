"""`vlbridge lavit ...`: the LaVIT pipeline steps that are not plain training.

    vlbridge lavit tokenizer --annotations DATA/scenes.json --vision VISION_DIR --out TOK_DIR
        the `tokenizer` stage: selector + merger + decoder (continuous, then VQ), then the pixel decoder
    vlbridge lavit prepare --tokenizer TOK_DIR --data DATA --out INIT_DIR
        text->image records (DATA/lavit_train.json = understanding + generation records) and the initial
        model (tiny-cpu LLM + lavit connector holding the trained tokenizer) for `vlbridge train --init-from`
    vlbridge lavit measure --model RUN/final --data DATA --out DIR
        figures: kept tokens, reconstruction, codebook, text->image agreement, sample grid

The whole pipeline on ShapesWorld (CPU, one thread):

    vlbridge data shapes --out DATA --n 3000
    vlbridge pretrain-vision --annotations DATA/scenes.json --out RUN/vision
    vlbridge lavit tokenizer --annotations DATA/scenes.json --vision RUN/vision --out RUN/tok
    vlbridge lavit prepare --tokenizer RUN/tok --data DATA --out RUN/init --captions_per_image 1
    vlbridge train --init-from RUN/init --data DATA --data.train_file lavit_train.json \
        --train.train_vision false --steps 400 --out RUN/unified
    vlbridge eval --model RUN/unified/final --data DATA/test.json
    vlbridge lavit measure --model RUN/unified/final --data DATA --out RUN/measure
    vlbridge generate-image --model RUN/unified/final --prompt "a red circle above a small blue square" --out img.png
"""
from __future__ import annotations

import argparse
import json

from .args import add_config_args, apply_overrides


def add_parser(sub) -> None:
    from ..recipes.lavit.tokenizer_stage import TokenizerTrainConfig
    p = sub.add_parser("lavit", help="LaVIT: train the dynamic visual tokenizer, prepare generation data, measure",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")

    tok = steps.add_parser("tokenizer", help="train the dynamic visual tokenizer and its pixel decoder",
                           description="Phase 1: reconstruct all patch features without quantisation; phase 2: with "
                                       "the EMA quantizer; phase 3: the conv pixel decoder. Writes TOK_DIR with "
                                       "config.json, model.safetensors, metrics.json.")
    tok.set_defaults(run=run_tokenizer, _dests=add_config_args(tok, TokenizerTrainConfig))

    from ..recipes.lavit.prepare import PrepareConfig
    prep = steps.add_parser("prepare", help="text->image records + the initial LaVIT model for `vlbridge train`",
                            description="Writes DATA/<train_file> (understanding records + 'Draw <caption>' -> "
                                        "[IMG] codes [/IMG] records) and OUT, a model to pass to `vlbridge train "
                                        "--init-from OUT --data DATA --data.train_file <train_file>`.")
    prep.set_defaults(run=run_prepare, _dests=add_config_args(prep, PrepareConfig))

    from ..recipes.lavit.measure import MeasureConfig
    meas = steps.add_parser("measure", help="kept tokens, reconstruction, codebook, text->image agreement, grid",
                            description="Figures of a trained LaVIT model on a ShapesWorld split; writes "
                                        "metrics.json, summary.md and samples.png into --out.")
    meas.set_defaults(run=run_measure, _dests=add_config_args(meas, MeasureConfig))


def run_tokenizer(args: argparse.Namespace) -> int:
    from ..recipes.lavit.tokenizer_stage import TokenizerTrainConfig, train_tokenizer
    cfg = apply_overrides(TokenizerTrainConfig(), args, args._dests)
    out = train_tokenizer(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    print(json.dumps(metrics, indent=1))
    print(f"tokenizer: {out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from ..recipes.lavit.prepare import PrepareConfig, prepare
    summary = prepare(apply_overrides(PrepareConfig(), args, args._dests))
    print(json.dumps(summary, indent=1))
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from ..recipes.lavit.measure import MeasureConfig, measure, summary_markdown
    cfg = apply_overrides(MeasureConfig(), args, args._dests)
    figures = measure(cfg)
    print(summary_markdown(figures, cfg))
    print(f"report: {cfg.out}")
    return 0
