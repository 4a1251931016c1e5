"""`vlbridge plan`: will a training run fit? Parameters, trainable parameters, weights, gradients, optimizer state,
activations and the total per device, from the run config alone (models built on the meta device)."""
from __future__ import annotations

import argparse

from ..config import RunConfig
from ..presets import PRESETS
from .args import add_config_args, show_defaults_of
from .parser import at_least, examples, positive_int
from .train_cmd import ALIASES, resolve, start

PLAN_ALIASES = {**ALIASES, "train.strategy": ["--strategy"], "train.precision": ["--precision"]}


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="estimate a training run's memory per device (no GPU or weights needed)",
                       description="Build the run's vision encoder, connector and LLM on the meta device from their "
                                   "configs (a checkpoint dir needs only its config.json) and print, per device: "
                                   "weights, gradients, AdamW state, autocast copies, FSDP's gathered layers and the "
                                   "activations of one micro-batch (measured on meta for one decoder layer), then "
                                   "the total against 24/40/80 GB GPUs and an order-of-magnitude step time. Takes "
                                   "every flag of `vlbridge train`; --precision auto plans for CUDA (bf16).",
                       epilog=examples(
                           "vlbridge plan --preset clip-qwen2 --vision tests/fixtures/hf/clip-vit-large-patch14-336 "
                           "--llm tests/fixtures/hf/Qwen2-7B-Instruct --stage instruct --batch-size 4",
                           "vlbridge plan --preset clip-qwen2 --llm Qwen/Qwen2-7B-Instruct --stage instruct "
                           "--strategy fsdp --nproc 8 --train.activation-checkpointing llm"))
    p.add_argument("--preset", default="tiny-cpu", choices=sorted(PRESETS), help="named preset (default: tiny-cpu)")
    p.add_argument("--config", help="a saved run config.json to start from instead of the preset")
    p.add_argument("--nproc", type=positive_int, default=1,
                   help="processes (GPUs) the run is spread over; FSDP divides by it (default: 1)")
    p.add_argument("--seq-len", type=positive_int, help="tokens per record, visual tokens included "
                                                         "(default: the LLM's max_length)")
    p.add_argument("--images-per-record", type=positive_int, default=1, help="images per record (default: 1)")
    p.add_argument("--answer-fraction", type=at_least(float, 0), default=0.1,
                   help="share of positions that carry a target (the LM head runs on those; default: 0.1)")
    p.add_argument("--gpu-tflops", type=at_least(float, 1), default=312.0,
                   help="peak dense TFLOP/s of one GPU in the chosen precision, for the step time "
                        "(default: 312, an A100's bf16)")
    p.add_argument("--mfu", type=at_least(float, 0.01), default=0.4,
                   help="fraction of that peak the run achieves, for the step time (default: 0.4)")
    dests = add_config_args(p, RunConfig, aliases=PLAN_ALIASES)
    show_defaults_of(p, start)
    p.set_defaults(run=run, _dests=dests, print_config=False, overwrite=False)


def run(args: argparse.Namespace) -> int:
    from ..train.plan import make_plan
    cfg = resolve(args)
    plan = make_plan(cfg, nproc=args.nproc, seq_len=args.seq_len, images_per_record=args.images_per_record,
                     answer_fraction=args.answer_fraction)
    print(plan.table(args.gpu_tflops, args.mfu))
    return 0
