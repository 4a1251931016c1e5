"""Decoding speed of the demo-size model (tiny-cpu: 4-layer, 128-wide Llama, one 64 px image per prompt):
per-token cost with the preallocated cache (the default), transformers' static and dynamic caches and full
recomputation, at batch 1 and 16, all measured in one run (the configurations interleaved, median of ``--reps``).

Per configuration: the seconds of a whole ``generate`` call for ``--new`` tokens (image encoding and prompt
included), the decode cost per token = (that - the same call for 1 token) / (new - 1), tokens/s over the
whole call, and recompute / cache; above each table, the aten operations one eager decode step dispatches and
its FLOPs (when the FLOPs take microseconds, the step's cost is per-operation overhead). Thread settings:
``auto`` (``GenerationConfig.threads=0``: a decode step this small runs on one thread) against ``all`` (the
decode steps on every torch thread, as before).
``--compile`` adds the compiled decode step (static cache; its compilation is excluded, it runs in the
warm-up). The model is random (the speed does not depend on the weights); stop tokens are disabled, so every
row generates ``--new`` tokens.

    python bench/decode.py [--new 128] [--batches 1,16] [--reps 3] [--threads 2] [--compile] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from vlbridge.data.records import Turn
from vlbridge.generate import Decoding, GenerationConfig, generate
from vlbridge.models.build import build_model
from vlbridge.presets import get_preset

QUESTIONS = ["What colour is the circle?", "How many shapes are there in the picture?", "Is the square left of "
             "the triangle?", "Which shape is the largest?"]


def prompts(model, batch: int):
    texts = [QUESTIONS[i % len(QUESTIONS)] for i in range(batch)]
    ids = [torch.tensor(model.builder.build([Turn("user", "<image>\n" + t)], for_generation=True)[0]) for t in texts]
    g = torch.Generator().manual_seed(0)
    size = model.vision.image_transform().size
    return ids, torch.rand(batch, 3, size, size, generator=g)


class OpCount(TorchDispatchMode):
    """Counts the aten operations dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def step_work(model, ids, pixels, gen: GenerationConfig) -> tuple[int, float]:
    """aten operations and FLOPs of one eager decode step (after a few steps)."""
    s, _ = model.embed(list(ids), None, pixels, padding_side="left")
    d = Decoding(model.llm, s.inputs_embeds, s.attention_mask, s.position_ids, 8, gen)
    d.prefill()
    token = torch.zeros(len(ids), dtype=torch.long)
    for _ in range(3):
        d.step(token)
    with OpCount() as ops, FlopCounterMode(display=False) as flops:
        d.step(token)
    return ops.n, flops.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new", type=int, default=128, help="new tokens per row (default 128)")
    ap.add_argument("--batches", default="1,16", help="batch sizes (default 1,16)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (median; default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads of the process (default 2)")
    ap.add_argument("--compile", action="store_true", help="also the compiled decode step (compiles first)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (with --threads 1, robust to other "
                         "processes loading the machine)")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_preset("tiny-cpu").model
    model = build_model(cfg, QUESTIONS * 10).eval()
    never = [len(model.tokenizer) + 7]                         # no row stops early
    n_params = sum(p.numel() for p in model.llm.parameters())
    print(f"tiny-cpu LLM: {n_params / 1e6:.2f}M parameters, {model.llm.config.num_hidden_layers} layers, width "
          f"{model.llm.config.hidden_size}; {args.threads} torch threads; {args.new} new tokens; {args.clock} clock; "
          f"median of {args.reps}")
    thread_settings = (("auto", 0), ("all", args.threads)) if args.threads > 1 else (("1", 1),)
    configs = {"preallocated": dict(cache="preallocated"), "static cache": dict(cache="static"),
               "dynamic cache": dict(cache="dynamic"), "recompute": dict(use_cache=False)}
    if args.compile:
        configs["static compiled"] = dict(cache="static", compile=True)
    for batch in [int(b) for b in args.batches.split(",")]:
        ids, pixels = prompts(model, batch)
        calls = {}
        for name, kw in configs.items():
            for threads, t in thread_settings:
                for new in (1, args.new):
                    gen = GenerationConfig(max_new_tokens=new, threads=t, **kw)
                    calls[(name, threads, new)] = (lambda g=gen: generate(model, ids, pixels, g, stop_token_ids=never))
        for fn in calls.values():                          # warm-up (and compilation)
            fn()
        times = {k: [] for k in calls}
        for _ in range(args.reps):
            for k, fn in calls.items():
                t0 = clock()
                fn()
                times[k].append(clock() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        ops, flops = step_work(model, ids, pixels, GenerationConfig())
        print(f"\nbatch {batch}: one decode step (preallocated cache, eager) dispatches {ops} aten operations for "
              f"{flops / 1e6:.1f} MFLOP")
        print(f"{'':<17}{'threads':>8}{'call s':>9}{'ms/token':>10}{'tokens/s':>10}{'recompute/this':>16}")
        for (name, threads, new), t in med.items():
            if new == 1:
                continue
            per = (t - med[(name, threads, 1)]) / (args.new - 1)
            ratio = med[("recompute", threads, args.new)] / t
            print(f"{name:<17}{threads:>8}{t:>9.3f}{per * 1e3:>10.2f}{batch * args.new / t:>10,.0f}{ratio:>15.2f}x")


if __name__ == "__main__":
    main()
