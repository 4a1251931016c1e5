"""Data-parallel training under torchrun (gloo, loopback): 2 processes x batch b == 1 process x batch 2b."""
from __future__ import annotations

import pytest

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict

import torch
from safetensors.torch import load_file

from support import tiny_run_config
from vlbridge.train.trainer import train

pytestmark = pytest.mark.slow          # end to end: subprocesses, several trainings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cfg_path, nproc: int, extra: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "vlbridge", "train", "--config", str(cfg_path), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def log_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def test_two_processes_train_the_same_model_as_one_with_the_global_batch(shapes_dir, tmp_path):
    single = tiny_run_config(shapes_dir, tmp_path / "single", steps=3)
    single.train.batch_size, single.train.grad_accum, single.train.group_by_length = 4, 2, True
    a = load_file(str(train(single) / "model.safetensors"))

    ddp = tiny_run_config(shapes_dir, tmp_path / "ddp", steps=3)
    ddp.train.batch_size, ddp.train.grad_accum, ddp.train.group_by_length = 2, 2, True   # 2 ranks x 2 = 4
    ddp.train.save_every = 2                     # rank 0 writes the checkpoints, the others wait
    cfg_path = tmp_path / "ddp.json"
    cfg_path.write_text(json.dumps(asdict(ddp)))
    done = torchrun(cfg_path, 2, [])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed: 2 processes x batch 2 = global batch 4" in done.stderr
    b = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))

    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max |single - ddp| = {worst:.2e}")
    assert worst < 5e-5, f"DDP weights differ from the single-process run by up to {worst:.2e}"
    # the loss and the gradient norm (which Adam's scale invariance would hide) match step by step
    for ra, rb in zip(log_rows(tmp_path / "single"), log_rows(tmp_path / "ddp"), strict=True):
        assert abs(ra["loss"] - rb["loss"]) < 1e-4 * max(1.0, ra["loss"]), (ra, rb)
        assert abs(ra["grad_norm"] - rb["grad_norm"]) < 1e-3 * ra["grad_norm"], (ra, rb)
    assert (tmp_path / "ddp" / "checkpoints" / "step_000002").is_dir()
