"""Activation checkpointing: peak memory and step time with and without it, one process, one run.

The stack: the tiny-cpu encoder (frozen, features cached) and connector with an 8-layer, 512-wide LLM, a batch of
32 ShapesWorld records, so that activations dominate what a step allocates. Each setting runs in a fresh process
(so peak resident set sizes compare): the memory a step adds on top of the loaded model is its peak RSS minus
the RSS after set-up (gradients and AdamW state are the same in both; the difference is activations).

    python bench/activation_checkpointing.py [--steps 4] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLM = dict(model_type="llama", hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
           num_key_value_heads=8, max_position_embeddings=512, tie_word_embeddings=True, rms_norm_eps=1e-5)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def worker(args) -> None:
    import torch

    from vlbridge.models.device import peak_memory_mb
    from vlbridge.presets import get_preset
    from vlbridge.train.trainer import Trainer
    torch.set_num_threads(args.threads)
    cfg = get_preset("tiny-cpu")
    cfg.model.llm.arch = dict(LLM)
    cfg.data.path, cfg.out = args.data, args.out
    cfg.train.train_vision, cfg.train.batch_size = False, args.batch_size
    cfg.train.steps, cfg.train.warmup_steps, cfg.train.eval_every, cfg.train.save_every = args.steps, 1, 0, 0
    cfg.train.activation_checkpointing = ["llm"] if args.checkpointing else []
    trainer = Trainer(cfg)
    trainer.setup()
    base = rss_mb()
    times, tokens = [], 0
    for _ in range(args.steps):
        t0 = time.perf_counter()
        tokens += trainer.train_step()["positions"]
        times.append(time.perf_counter() - t0)
    Path(args.report).write_text(json.dumps({"base_mb": base, "peak_mb": peak_memory_mb(trainer.device),
                                             "step_s": statistics.median(times[1:]), "tokens": tokens}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="steps per setting (the first is not timed)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--data", "--out", "--report"):
        ap.add_argument(flag, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from vlbridge.data.shapesworld import ShapesWorldConfig, generate
    tmp = Path(tempfile.mkdtemp(prefix="vlbridge-bench-ac-"))
    generate(ShapesWorldConfig(n=300, seed=0), tmp / "data")
    results = {}
    for name, flag in (("off", []), ("llm", ["--checkpointing"])):
        report = tmp / f"{name}.json"
        cmd = [sys.executable, __file__, "--worker", *flag, "--data", str(tmp / "data"), "--out", str(tmp / name),
               "--report", str(report), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads)]
        done = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
        results[name] = json.loads(report.read_text())
    print(f"tiny-cpu encoder (frozen) + connector, LLM {LLM['num_hidden_layers']} x {LLM['hidden_size']} (fp32), "
          f"batch {args.batch_size}, {args.steps} steps, {args.threads} threads")
    print(f"{'checkpointing':<14} {'RSS after set-up':>17} {'peak RSS':>9} {'step adds':>10} {'step s':>7}")
    for name, r in results.items():
        print(f"{name:<14} {r['base_mb']:>14.0f} MiB {r['peak_mb']:>5.0f} MiB {r['peak_mb'] - r['base_mb']:>6.0f} MiB "
              f"{r['step_s']:>7.2f}")
    off, on = results["off"], results["llm"]
    print(f"with / without: memory a step adds {(on['peak_mb'] - on['base_mb']) / (off['peak_mb'] - off['base_mb']):.2f}x, "
          f"step time {on['step_s'] / off['step_s']:.2f}x")


if __name__ == "__main__":
    main()
