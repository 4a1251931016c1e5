"""Throughput of the tiny-cpu training run: one process using every core vs torchrun with one process per core.

Both runs train the same global batch (16 records) on the same data for the same number of steps, one after
the other in this invocation (timings here are noisy; the ratio is what to read). Real tokens/s is taken from
each run's own log, in steady state as in train_step.py: the LLM positions trained after the first epoch (which
also runs the frozen encoder once per image to fill the feature cache) over the seconds they took. MFU of each:
tokens/s x FLOPs per position (counted as in train_step.py on a batch sample of the same data, encoder features
cached) / the fp32 matmul peak of all cores, measured in this run.

    python bench/data_parallel.py [--epochs 3] [--procs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from train_step import ATTENTION_FLOPS, attention_part, matmul_peak        # bench/ is on sys.path when run as a script
from vlbridge.data.shapesworld import ShapesWorldConfig, generate
from vlbridge.presets import get_preset
from vlbridge.train.trainer import Trainer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], threads: int, out: Path) -> float:
    """Steady-state LLM positions/s of a training run logged once per epoch: from the first log row on."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "tokens_per_s" in r]      # tokens_per_s: positions since the start / elapsed_s
    first, last = rows[0], rows[-1]
    positions = last["tokens_per_s"] * last["elapsed_s"] - first["tokens_per_s"] * first["elapsed_s"]
    return positions / (last["elapsed_s"] - first["elapsed_s"])


def flops_per_position(data: Path, out: Path, batch_size: int, n_batches: int = 10) -> tuple[float, float]:
    """Forward+backward FLOPs per LLM position of tiny-cpu (encoder frozen, features cached) on ``data``:
    (attention in full as PaLM counts it, attention's causal half)."""
    cfg = get_preset("tiny-cpu")
    cfg.data.path, cfg.out = str(data), str(out)
    cfg.train.train_vision, cfg.train.batch_size = False, batch_size
    trainer = Trainer(cfg)
    trainer.setup()
    batches = [next(trainer.stream) for _ in range(n_batches)]
    for batch in batches:                                  # fill the feature cache, as in steady state
        trainer.model(batch)
    positions = 0
    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS) as counter:
        for batch in batches:
            out = trainer.model(batch)
            out.loss.backward()
            positions += out.n_positions
    flops = counter.get_total_flops()
    return (flops + attention_part(counter)) / positions, flops / positions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs of 480 records; the first is not timed")
    ap.add_argument("--procs", type=int, default=2, help="torchrun processes (one thread each)")
    ap.add_argument("--global-batch", type=int, default=16)
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    tmp = Path(tempfile.mkdtemp(prefix="vlbridge-bench-ddp-"))
    generate(ShapesWorldConfig(n=600, seed=0), tmp / "data")
    epoch = -(-len(json.loads((tmp / "data" / "train.json").read_text())) // args.global_batch)   # steps
    steps = epoch * args.epochs
    common = ["train", "--preset", "tiny-cpu", "--train.train_vision", "false", "--data", str(tmp / "data"),
              "--steps", str(steps),
              "--train.eval_every", "0", "--train.save_every", "0", "--train.log_every", str(epoch)]
    single = run([sys.executable, "-m", "vlbridge", *common, "--batch-size", str(args.global_batch),
                  "--out", str(tmp / "single")], cores, tmp / "single")
    ddp = run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.procs}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "vlbridge", *common,
               "--batch-size", str(args.global_batch // args.procs), "--out", str(tmp / "ddp")],
              max(1, cores // args.procs), tmp / "ddp")
    torch.set_num_threads(cores)
    peak = max(matmul_peak(), matmul_peak())
    palm, causal = flops_per_position(tmp / "data", tmp / "flops", args.global_batch)
    print(f"tiny-cpu, global batch {args.global_batch}, {steps} steps (timed: the last {steps - epoch}), {cores} cores; fp32 matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s; {palm / 1e6:.2f} MFLOP per position forward + backward (attention in full, "
          f"PaLM; {causal / 1e6:.2f} counting its causal half)")
    for name, tok_s in ((f"1 process x {cores} threads", single),
                        (f"{args.procs} processes x {max(1, cores // args.procs)} thread(s) (DDP)", ddp)):
        print(f"{name:<34} {tok_s:8,.0f} tokens/s   MFU {tok_s * palm / peak:6.1%} (causal half: "
              f"{tok_s * causal / peak:.1%})")
    print(f"data-parallel speed-up              {ddp / single:8.2f}x")


if __name__ == "__main__":
    main()
