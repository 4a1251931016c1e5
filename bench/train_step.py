"""Training-step speed of the tiny-cpu config: tokens/s, MFU, and overhead against a bare forward/backward.

Measured as ``make demo`` trains: the vision encoder frozen (its features cached after the first epoch), the
connector and LLM trained. Everything is measured in one run (timings on this machine are noisy, ratios less so):
  peak      fp32 matmul FLOP/s (the best of several large square matmuls, before and after); also measured,
            the same way, right after every timed step, as this machine's speed drifts by 10-40% within minutes
  trainer   Trainer.train_step over N consecutive steps: data loading, splicing, forward, backward,
            clipping, AdamW, schedule
  bare      the same modules' forward + backward on the same N batches, pre-built (no data, no optimizer),
            each right after the trainer's step on it
  flops     the FLOPs those N batches execute (forward + backward), counted by torch.utils.flop_counter;
            attention is counted as the causal kernel computes it (half of the T x T scores; the counter has
            no formula for the CPU flash kernel, added here)
MFU = flops / trainer-time / peak, against two peaks: the best of the run (a strict figure) and the peaks
measured beside the steps, weighted by step time (the same conditions as the steps). Each is printed with
attention counted as PaLM's MFU counts it (the full T x T score matrix, 12 L H Q T per token) and as the causal
kernel computes it (half). Overhead = trainer-time / bare-time - 1. One epoch runs first, untimed, so the
feature cache is warm as it is for most of a real run (the demo trains six epochs).

Then, on a machine with several cores, the same trainer runs a few steps on one thread against that thread's own
peak: the ratio of the two tokens/s against the ratio of the two peaks shows how much of a shortfall comes from
splitting each op across threads (matmuls scale with cores; small memory-bound ops and CPU flash attention less).

    python bench/train_step.py [--steps 20] [--batch-size 16] [--compile] [--one-core-steps 10]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlbridge.data.shapesworld import ShapesWorldConfig, generate
from vlbridge.presets import get_preset
from vlbridge.train.data import BatchStream
from vlbridge.train.trainer import Trainer

aten = torch.ops.aten


def matmul_peak(n: int = 1024, reps: int = 10, clock=time.perf_counter) -> float:
    """fp32 FLOP/s of the best of ``reps`` n^3 matmuls, timed with ``clock`` (the clock of the timings it is
    compared with: on a shared machine a wall-clock best-of understates what CPU-time timings achieve)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = clock()
        a @ b
        best = min(best, clock() - t)
    return 2 * n ** 3 / best


def _attention_flops(q_shape, k_shape, causal: bool) -> int:
    """Q K^T and P V: 2 matmuls of 2*Tq*Tk*d each per (batch, head); a causal kernel skips half."""
    b, h, tq, d = q_shape
    flops = 2 * 2 * b * h * tq * k_shape[-2] * d
    return flops // 2 if causal else flops


def _flash_cpu(query, key, value, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:
    return _attention_flops(query.shape if hasattr(query, "shape") else query,
                            key.shape if hasattr(key, "shape") else key, is_causal)


def _flash_cpu_backward(grad_out, query, key, value, out, logsumexp, dropout_p=0.0, is_causal=False, *args,
                        out_shape=None, **kwargs) -> int:
    # dQ, dK, dV, and the recomputed scores and dP: twice the forward's matmul work
    return 2 * _attention_flops(query.shape if hasattr(query, "shape") else query,
                                key.shape if hasattr(key, "shape") else key, is_causal)


ATTENTION_FLOPS = {aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu,
                   aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_cpu_backward}


def attention_part(counter: FlopCounterMode) -> int:
    """The FLOPs the counter attributed to the attention kernels."""
    counts = counter.get_flop_counts().get("Global", {})
    return sum(n for op, n in counts.items() if op in ATTENTION_FLOPS or str(op) in map(str, ATTENTION_FLOPS))


def timed_steps(trainer: Trainer, steps: int) -> dict:
    """``steps`` trainer steps, each followed by a bare forward+backward of the same batch and a matmul peak.

    Trainer steps and bare passes alternate over the same batches (a replayed stream from the same position), so
    that slow drifts of this machine's speed hit both alike; the peak beside each step is measured exactly as the
    run's best peak is (same size, same repetitions), so neither is favoured."""
    model = trainer.model
    replay = BatchStream(trainer.train_set, trainer.cfg.train, *trainer.stream.position)
    batches, t_trainer, t_bare, positions, peak_time = [], 0.0, 0.0, 0, 0.0
    for _ in range(steps):
        batch = next(replay)                             # the batch the trainer's next step draws
        batches.append(batch)
        t = time.perf_counter()
        positions += trainer.train_step()["positions"]
        dt = time.perf_counter() - t
        t_trainer += dt
        t = time.perf_counter()
        model(batch).loss.backward()
        model.zero_grad(set_to_none=True)
        t_bare += time.perf_counter() - t
        peak_time += dt * matmul_peak()                  # the peak right after this step, weighted by its time
    # FLOPs are counted on the eager modules (the same maths; the counter sees aten ops, not compiled kernels)
    with torch.compiler.set_stance("force_eager"), \
            FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS) as counter:
        for batch in batches:
            model(batch).loss.backward()
    model.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()                    # attention: causal half
    return dict(trainer=t_trainer, bare=t_bare, positions=positions, peak_alongside=peak_time / t_trainer,
                flops=flops, flops_palm=flops + attention_part(counter))   # PaLM: attention's full score matrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--preset", default="tiny-cpu")
    ap.add_argument("--train-vision", action="store_true", help="train the encoder too (the preset's default; "
                                                                "the demo freezes a pretrained one)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the LLM's decoder layers "
                                                          "(--train.compile; compiled during the warm-up epoch)")
    ap.add_argument("--one-core-steps", type=int, default=10, help="steps of the one-thread measurement that "
                                                                  "follows (0: skip it)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vlbridge-bench-"))
    generate(ShapesWorldConfig(n=400, seed=0), tmp / "data")
    cfg = get_preset(args.preset)
    cfg.data.path, cfg.out = str(tmp / "data"), str(tmp / "run")
    cfg.train.batch_size, cfg.train.steps, cfg.train.warmup_steps = args.batch_size, 10_000, 10
    cfg.train.train_vision, cfg.train.compile = args.train_vision, args.compile
    trainer = Trainer(cfg)
    trainer.setup()
    model = trainer.model

    batches_per_epoch = -(-len(trainer.train_set) // args.batch_size)
    for _ in range(batches_per_epoch):                   # untimed: warm-up, and every image's features cached
        trainer.train_step()
    threads = torch.get_num_threads()
    peak_before = matmul_peak()
    run = timed_steps(trainer, args.steps)
    peak = max(peak_before, matmul_peak())

    n_params = sum(p.numel() for p in model.parameters())
    print(f"preset {args.preset} (vision {'trained' if args.train_vision else 'frozen, features cached'}): "
          f"batch {args.batch_size}, {run['positions'] / args.steps:,.0f} LLM positions/step, {n_params / 1e6:.2f}M "
          f"parameters, {threads} threads, {args.steps} steps"
          + (", decoder layers compiled" if args.compile else ""))
    print(f"fp32 matmul peak          {peak / 1e9:8.1f} GFLOP/s (best of the run; {run['peak_alongside'] / 1e9:.1f} "
          f"on average beside the steps)")
    print(f"FLOPs per training step   {run['flops_palm'] / args.steps / 1e9:8.2f} GFLOP forward + backward (attention "
          f"in full, PaLM); {run['flops'] / args.steps / 1e9:.2f} counting its causal half")
    report("trainer step", run, "trainer", args.steps, peak)
    report("bare forward+backward", run, "bare", args.steps, peak)
    print(f"trainer overhead vs bare  {run['trainer'] / run['bare'] - 1:+8.1%}")

    if args.one_core_steps and threads > 1:
        # The same trainer on one core: how much of the all-core shortfall is splitting each op across threads
        torch.set_num_threads(1)
        for _ in range(2):                               # untimed: compiled kernels are rebuilt for one thread
            trainer.train_step()
        peak1 = matmul_peak()
        one = timed_steps(trainer, args.one_core_steps)
        peak1 = max(peak1, matmul_peak())
        print(f"one core (1 thread), {args.one_core_steps} steps; its own fp32 matmul peak {peak1 / 1e9:.1f} GFLOP/s:")
        report("trainer step", one, "trainer", args.one_core_steps, peak1)
        print(f"  {threads} threads run {run['positions'] / run['trainer'] / (one['positions'] / one['trainer']):.2f}x"
              f" the tokens/s of one, where the matmul peak scales {peak / peak1:.2f}x")
        torch.set_num_threads(threads)


def report(name: str, run: dict, key: str, steps: int, peak: float) -> None:
    """Step time, tokens/s and MFU (PaLM; causal half) against the best peak and the peaks beside the steps."""
    t = run[key]
    mfu = lambda p: f"{run['flops_palm'] / t / p:6.1%} (causal half: {run['flops'] / t / p:.1%})"
    print(f"{name:<25} {t / steps * 1e3:8.1f} ms   {run['positions'] / t:8,.0f} tokens/s   MFU {mfu(peak)}"
          f"   beside the steps {mfu(run['peak_alongside'])}")


if __name__ == "__main__":
    main()
