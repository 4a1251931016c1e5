"""Training-step speed of the tiny-cpu config: tokens/s, MFU, and overhead against a bare forward/backward.

Everything is measured in one run (timings on this machine are noisy, ratios are not):
  peak      fp32 matmul FLOP/s (the best of several large square matmuls)
  flops     FLOPs of one training step, counted by torch.utils.flop_counter (forward + backward)
  trainer   Trainer.train_step: data loading, splicing, forward, backward, clipping, AdamW, schedule
  bare      the same modules' forward + backward on a pre-built batch (no data, no optimizer)
MFU = flops / trainer-time / peak; overhead = trainer-time / bare-time - 1.

    python bench/train_step.py [--steps 20] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlbridge.data.shapes import ShapesWorldConfig, generate
from vlbridge.presets import get_preset
from vlbridge.train.trainer import Trainer


def matmul_peak(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def timed(fn, steps: int) -> float:
    """Median seconds per call."""
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--preset", default="tiny-cpu")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vlbridge-bench-"))
    generate(ShapesWorldConfig(n=400, seed=0), tmp / "data")
    cfg = get_preset(args.preset)
    cfg.data.path, cfg.out = str(tmp / "data"), str(tmp / "run")
    cfg.train.batch_size, cfg.train.steps, cfg.train.warmup_steps = args.batch_size, 10_000, 10
    trainer = Trainer(cfg)
    trainer.setup()
    model = trainer.model

    batch = next(trainer.stream)
    with FlopCounterMode(display=False) as counter:
        model(batch).loss.backward()
    flops = counter.get_total_flops()
    model.zero_grad(set_to_none=True)

    def bare():
        model(batch).loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(3):                                    # warm-up both paths
        trainer.train_step()
        bare()
    peak_before = matmul_peak()
    t_trainer = timed(trainer.train_step, args.steps)
    t_bare = timed(bare, args.steps)
    peak = max(peak_before, matmul_peak())
    positions = int(sum(len(x) for x in batch.input_ids) + len(batch.pixel_values) * (model.visual_tokens_per_image() - 1))

    print(f"preset {args.preset}: batch {args.batch_size}, {positions} LLM positions/step, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {torch.get_num_threads()} threads")
    print(f"fp32 matmul peak          {peak / 1e9:8.1f} GFLOP/s")
    print(f"FLOPs per training step   {flops / 1e9:8.2f} GFLOP (forward + backward)")
    print(f"trainer step              {t_trainer * 1e3:8.1f} ms   {positions / t_trainer:8,.0f} tokens/s   "
          f"MFU {flops / t_trainer / peak:6.1%}")
    print(f"bare forward+backward     {t_bare * 1e3:8.1f} ms   {positions / t_bare:8,.0f} tokens/s   "
          f"MFU {flops / t_bare / peak:6.1%}")
    print(f"trainer overhead vs bare  {t_trainer / t_bare - 1:+8.1%}")


if __name__ == "__main__":
    main()
