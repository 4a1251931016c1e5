"""Training-step cost of LION's mixture of adapters: the same model with and without adapters, in one run.

Two models are built from one seed and one config (``tiny-cpu-lion`` unless widened), differing only in the
connector's ``adapters`` option (2 = LION's routed pair, 0 = none), so every other weight is identical. Each
timed step is a full optimizer step on the same batch of ShapesWorld records (forward, backward, AdamW),
alternating between the two models every repetition (this machine is shared and its speed drifts; ratios of
interleaved runs are stable where absolute times are not). Batches mix image- and region-typed records, so
both adapters run. Stages:
  mixed     LION's stage 3: the LLM frozen, the branches + every adapter + the router train
  instruct  the LLM trains too (full fine-tuning)
``--llm-width`` / ``--llm-layers`` rebuild the LLM wider (the adapters' bottleneck stays 64): at real widths
their share of the FFN work shrinks as 64 / width.

    python bench/moa.py [--steps 10] [--batch-size 16] [--threads 1] [--llm-width 128] [--stages mixed,instruct]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vlbridge.config import DataConfig, TrainConfig
from vlbridge.connectors.lion import LionConnector
from vlbridge.data.dataset import collate
from vlbridge.data.records import SkipReport, load_records
from vlbridge.data.shapesworld import ShapesWorldConfig, generate
from vlbridge.models.build import build_tokenizer
from vlbridge.models.vlm import VLBridgeModel
from vlbridge.presets import get_preset
from vlbridge.train.data import make_dataset
from vlbridge.train.stages import apply_stage, make_optimizer


def build(cfg, tokenizer, adapters: int, stage: str) -> tuple[VLBridgeModel, torch.optim.Optimizer]:
    cfg = copy.deepcopy(cfg)
    cfg.connector.options = {**cfg.connector.options, "adapters": adapters}
    torch.manual_seed(0)
    model = VLBridgeModel(cfg, copy.deepcopy(tokenizer)).train()
    apply_stage(model, LionConnector.stages(model.connector.options)[stage])
    model.train()
    return model, make_optimizer(model, TrainConfig(stage=stage, lr=1e-4))


def step(model, optimizer, batch) -> float:
    t = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    model(batch).loss.backward()
    optimizer.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model (interleaved)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--llm-width", type=int, default=None, help="LLM hidden size (default: the preset's 128)")
    ap.add_argument("--llm-layers", type=int, default=None, help="LLM layers (default: the preset's 4)")
    ap.add_argument("--stages", default="mixed,instruct")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="vlbridge-moa-"))
    generate(ShapesWorldConfig(n=200, seed=0, extra_tasks=["gcap", "rec_neg"],
                               single_turn_tasks=["rec", "reg", "gcap", "rec_neg"], single_turn_records=1), tmp)
    cfg = get_preset("tiny-cpu-lion").model
    if args.llm_width:
        heads = max(args.llm_width // 64, 1)
        cfg.llm.arch.update(hidden_size=args.llm_width, intermediate_size=4 * args.llm_width,
                            num_attention_heads=heads, num_key_value_heads=heads)
    if args.llm_layers:
        cfg.llm.arch["num_hidden_layers"] = args.llm_layers
    records = load_records(tmp / "train.json")
    tokenizer = build_tokenizer(cfg, (t.text for r in records for t in r.turns))
    # alternate image-level (multi-turn) and region-level (single-turn) records: both adapters run in every batch
    image = [r for r in records if r.task == "mixed"]
    region = [r for r in records if r.task != "mixed"]
    mixed = [r for pair in zip(image, region) for r in pair]
    for stage in args.stages.split(","):
        models = {name: build(cfg, tokenizer, k, stage) for name, k in (("moa", 2), ("none", 0))}
        ds = make_dataset(mixed, models["moa"][0], DataConfig(), SkipReport())
        batches = [collate([ds[i] for i in range(s, s + args.batch_size)])
                   for s in range(0, args.batch_size * args.steps, args.batch_size)]
        for model, opt in models.values():                                  # warm-up (allocations, caches)
            step(model, opt, batches[0])
        times = {k: [] for k in models}
        for batch in batches:
            for name, (model, opt) in models.items():
                times[name].append(step(model, opt, batch))
        moa, none = statistics.median(times["moa"]), statistics.median(times["none"])
        width = cfg.llm.arch["hidden_size"]
        n_moa = sum(p.numel() for n, p in models["moa"][0].named_parameters() if "moa_" in n)
        print(f"stage {stage:<8} LLM width {width}, {cfg.llm.arch['num_hidden_layers']} layers, batch "
              f"{args.batch_size}, {args.threads} thread(s): with 2 adapters {moa * 1e3:7.1f} ms/step, without "
              f"{none * 1e3:7.1f} ms/step -> {moa / none - 1:+.1%} ({n_moa:,} adapter+router parameters)")


if __name__ == "__main__":
    main()
