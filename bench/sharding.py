"""FSDP vs DDP on CPU processes: step time and memory per process, same global batch, same model, one run.

Each strategy runs under torchrun (gloo, loopback) on a stack larger than the demo's, so that weights and optimizer
state are visible next to the interpreter: the tiny-cpu encoder and connector with an 8-layer, 512-wide LLM
(~26M parameters). Every process reports what it holds after its steps: the bytes of its parameters, gradients and
AdamW state (its shards under FSDP), its peak resident set size, and its median step time. Sharding should cut the
first by about the number of processes; on a 2-core CPU it gives no speed-up (FSDP adds all-gathers).

    python bench/sharding.py [--procs 2] [--steps 8]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

LLM = dict(model_type="llama", hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
           num_key_value_heads=8, max_position_embeddings=512, tie_word_embeddings=True, rms_norm_eps=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_bytes(t: torch.Tensor) -> int:
    """Bytes this process holds for ``t`` (its shard when ``t`` is a DTensor)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def worker(args) -> None:
    """One process of the run (under torchrun): train ``steps`` steps, then report what it holds."""
    import torch.distributed as dist

    from vlbridge.models.device import peak_memory_mb
    from vlbridge.presets import get_preset
    from vlbridge.train.trainer import Trainer
    cfg = get_preset("tiny-cpu")
    cfg.model.llm.arch = dict(LLM)
    cfg.data.path, cfg.out = args.data, args.out
    cfg.train.train_vision, cfg.train.strategy = False, args.strategy
    cfg.train.batch_size, cfg.train.steps, cfg.train.warmup_steps = args.batch_size, args.steps, 1
    cfg.train.eval_every = cfg.train.save_every = 0
    trainer = Trainer(cfg)
    trainer.setup()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    params = [p for p in trainer.model.parameters()]
    held = {"parameters": sum(local_bytes(p) for p in params),
            "gradients": sum(local_bytes(p.grad) for p in params if p.grad is not None),
            "optimizer": sum(local_bytes(v) for s in trainer.optimizer.state.values() for v in s.values()
                             if torch.is_tensor(v))}
    row = {"rank": trainer.ctx.rank, **held, "peak_rss_mb": peak_memory_mb(trainer.device),
           "step_s": statistics.median(times[1:])}
    rows = [None] * trainer.ctx.world
    dist.all_gather_object(rows, row)
    if trainer.ctx.is_main:
        Path(args.report).write_text(json.dumps(rows))
    dist.destroy_process_group()


def launch(strategy: str, procs: int, data: Path, tmp: Path, steps: int, batch: int) -> list[dict]:
    report = tmp / f"{strategy}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", __file__, "--worker", "--strategy", strategy, "--data", str(data),
           "--out", str(tmp / strategy), "--report", str(report), "--steps", str(steps), "--batch-size", str(batch)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return json.loads(report.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per strategy (the first is not timed)")
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--strategy", "--data", "--out", "--report"):
        ap.add_argument(flag, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from vlbridge.data.shapesworld import ShapesWorldConfig, generate
    tmp = Path(tempfile.mkdtemp(prefix="vlbridge-bench-fsdp-"))
    generate(ShapesWorldConfig(n=300, seed=0), tmp / "data")
    batch = args.global_batch // args.procs
    results = {s: launch(s, args.procs, tmp / "data", tmp, args.steps, batch) for s in ("ddp", "fsdp")}
    mib = 2 ** 20
    print(f"tiny-cpu encoder + connector, LLM {LLM['num_hidden_layers']} x {LLM['hidden_size']} (fp32); "
          f"{args.procs} processes x batch {batch} = global batch {args.global_batch}; {args.steps} steps; "
          f"{os.cpu_count()} cores")
    print(f"{'':<6} {'params MiB':>10} {'grads MiB':>10} {'AdamW MiB':>10} {'sum MiB':>9} {'peak RSS MiB':>13} "
          f"{'step s':>7}   (per process, rank 0 / mean over ranks)")
    for strategy, rows in results.items():
        mean = lambda k: statistics.mean(r[k] for r in rows)
        total = mean("parameters") + mean("gradients") + mean("optimizer")
        print(f"{strategy:<6} {mean('parameters') / mib:>10.1f} {mean('gradients') / mib:>10.1f} "
              f"{mean('optimizer') / mib:>10.1f} {total / mib:>9.1f} {mean('peak_rss_mb'):>13.0f} "
              f"{rows[0]['step_s']:>7.3f}")
    held = {s: sum(statistics.mean(r[k] for r in rows) for k in ("parameters", "gradients", "optimizer"))
            for s, rows in results.items()}
    rss = {s: statistics.mean(r["peak_rss_mb"] for r in rows) for s, rows in results.items()}
    step = {s: rows[0]["step_s"] for s, rows in results.items()}
    print(f"FSDP / DDP: parameters + gradients + AdamW {held['fsdp'] / held['ddp']:.2f}x, "
          f"peak RSS {rss['fsdp'] / rss['ddp']:.2f}x, step time {step['fsdp'] / step['ddp']:.2f}x")


if __name__ == "__main__":
    main()
