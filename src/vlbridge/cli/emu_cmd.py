"""`vlbridge emu ...`: the Emu pipeline steps that are not plain training.

    vlbridge emu prepare --model RUN/read/final --out RUN/init --options '{"regression_weight": 1}'
        a saved model with its objective's options changed (the start of the `generate` stage)
    vlbridge emu decoder --model RUN/final --data DOCS --out RUN/gen
        the `decoder` stage: the visual decoder learns to paint the trained model's embeddings of the data's images
    vlbridge emu measure --model RUN/gen --data DOCS --out DIR
        next-frame and text->image figures against their baselines, the trilemma entry, a sample grid
    vlbridge emu claims --data DOCS --vision RUN/vision --out DIR [--seeds 0,1,2]
        every claim over seeds: models with and without regression, decoder, eval, measure; claims.md

The whole pipeline on ShapesWorld documents (CPU): the connector learns to read without the regression, then the
LLM learns to produce images with the connector frozen (trained together from the start, the embeddings
collapse: docs/notes/emu.md), then the decoder:

    vlbridge data shapes-docs --out DOCS --n 3000
    vlbridge pretrain-vision --annotations DOCS/scenes.json --out RUN/vision
    vlbridge train --preset tiny-cpu-emu --model.vision.name_or_path RUN/vision --train.train_vision false \
        --model.connector.options '{"num_queries": 16, "pool": true, "decoder_width": 64, "decoder_channels": [32, 16, 16], "regression_weight": 0}' \
        --data DOCS --out RUN/read
    vlbridge emu prepare --model RUN/read/final --out RUN/init --options '{"regression_weight": 1}'
    vlbridge train --init-from RUN/init --stage generate --data DOCS --out RUN/lm
    vlbridge emu decoder --model RUN/lm/final --data DOCS --out RUN/gen
    vlbridge eval --model RUN/gen --data DOCS/test.json                  # QA and few-shot (k = 0, 1, 2, 4)
    vlbridge emu measure --model RUN/gen --data DOCS --out RUN/measure
    vlbridge generate-image --model RUN/gen --prompt "a red circle above a small blue square" --out img.png
"""
from __future__ import annotations

import argparse
import json

from ..config import validate
from ..errors import UserError
from .args import add_config_args, add_overwrite_flag, apply_overrides
from .parser import examples

OUT = {"out": ["--out", "--output-dir"]}


def add_parser(sub) -> None:
    from ..recipes.emu.claims import ClaimsConfig
    from ..recipes.emu.decoder import DecoderTrainConfig
    from ..recipes.emu.measure import EmuMeasureConfig
    first, _, rest = __doc__.partition("\n\n")
    p = sub.add_parser("emu", help="Emu: objective hand-off, visual decoder, generation figures, the claims",
                       description=first, epilog=rest)
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")
    prep = steps.add_parser("prepare", help="a saved Emu model with its objective's options changed",
                            description="Copies --model to --out with the objective options of --options changed "
                                        "(regression_weight, regression_loss, detach_targets, collapse_ratio, "
                                        "collapse_patience), e.g. to start the generate stage.",
                            epilog=examples("vlbridge emu prepare --model RUN/read/final --out RUN/init --options "
                                            "'{\"regression_weight\": 1}'"))
    prep.add_argument("--model", required=True, help="saved Emu model dir")
    prep.add_argument("--out", "--output-dir", required=True, help="output model dir")
    prep.add_argument("--options", required=True, help="JSON object of objective options")
    add_overwrite_flag(prep, "model")
    prep.set_defaults(run=run_prepare)
    dec = steps.add_parser("decoder", help="train the visual decoder of a trained Emu model",
                           description="Everything but the decoder frozen; writes the model with its decoder to --out "
                                       "and decoder_metrics.json (held-out reconstruction figures) beside it.",
                           epilog=examples("vlbridge emu decoder --model RUN/lm/final --data DOCS --out RUN/gen"))
    add_overwrite_flag(dec, "model")
    dec.set_defaults(run=run_decoder, _dests=add_config_args(dec, DecoderTrainConfig, aliases=OUT,
                                                             required=("model", "data", "out")))
    meas = steps.add_parser("measure", help="next-frame and text->image figures, trilemma entry, sample grid",
                            description="Writes metrics.json, summary.md and samples.png into --out.",
                            epilog=examples("vlbridge emu measure --model RUN/gen --data DOCS --out RUN/measure"))
    meas.set_defaults(run=run_measure, _dests=add_config_args(meas, EmuMeasureConfig, aliases=OUT,
                                                              required=("model", "data", "out")))
    claims = steps.add_parser("claims", help="every Emu claim over seeds, with and without regression",
                              description="Trains, evaluates and measures each seed with and without the regression "
                                          "(resumable: finished steps are skipped); writes claims.md and claims.json.",
                              epilog=examples("vlbridge emu claims --data DOCS --vision RUN/vision --out RUN/claims"))
    claims.set_defaults(run=run_claims, _dests=add_config_args(claims, ClaimsConfig, aliases=OUT,
                                                               required=("data", "vision")))


def run_prepare(args: argparse.Namespace) -> int:
    from ..recipes.emu.prepare import prepare
    from ..train.output_dir import check_output_dir
    check_output_dir(args.out, overwrite=args.overwrite)
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as e:
        raise UserError(f"--options: not JSON ({e.msg}): {args.options!r}") from None
    if not isinstance(options, dict):
        raise UserError(f"--options: expected a JSON object of options, got {args.options!r}")
    print(f"model: {prepare(args.model, args.out, options)}")
    return 0


def run_claims(args: argparse.Namespace) -> int:
    from ..recipes.emu.claims import ClaimsConfig, run_claims
    cfg = validate(apply_overrides(ClaimsConfig(), args, args._dests))
    print(run_claims(cfg)["text"])
    print(f"claims: {cfg.out}/claims.md")
    return 0


def run_decoder(args: argparse.Namespace) -> int:
    from ..recipes.emu.decoder import DecoderTrainConfig, summary_line, train_decoder
    from ..train.output_dir import check_output_dir
    cfg = validate(apply_overrides(DecoderTrainConfig(), args, args._dests))
    check_output_dir(cfg.out, overwrite=args.overwrite)
    out = train_decoder(cfg)
    print(summary_line(json.loads((out / "decoder_metrics.json").read_text())))
    print(f"model with decoder: {out}")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from ..recipes.emu.measure import EmuMeasureConfig, measure, summary_markdown
    cfg = validate(apply_overrides(EmuMeasureConfig(), args, args._dests))
    print(summary_markdown(measure(cfg), cfg))
    print(f"report: {cfg.out}")
    return 0
