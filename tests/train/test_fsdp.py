"""FSDP2 sharding under torchrun (gloo on CPU, loopback): 2 sharded processes train what 1 process trains, and
an interrupted sharded run resumes exactly; checkpoints keep the single-process layout."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from support import tiny_run_config
from test_distributed import log_rows, torchrun
from vlbridge.train.trainer import train

pytestmark = pytest.mark.slow          # end to end: torchrun subprocesses


def launch(cfg, tmp_path, name: str, extra: tuple[str, ...] = ()):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(asdict(cfg)))
    done = torchrun(path, 2, list(extra))
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_sharded_processes_train_the_same_model_as_one(shapes_dir, tmp_path):
    """Full fine-tuning with the encoder trained too (its blocks sharded), gradient accumulation, a gathered
    checkpoint mid-run: losses, gradient norms and final weights match one process with the global batch."""
    single = tiny_run_config(shapes_dir, tmp_path / "single", steps=3)
    single.train.batch_size, single.train.grad_accum, single.train.save_every = 4, 2, 2
    a = load_file(str(train(single) / "model.safetensors"))

    fsdp = tiny_run_config(shapes_dir, tmp_path / "fsdp", steps=3)
    fsdp.train.batch_size, fsdp.train.grad_accum, fsdp.train.save_every = 2, 2, 2
    fsdp.train.strategy = "fsdp"
    done = launch(fsdp, tmp_path, "fsdp")
    assert "fsdp: sharded 3 encoder blocks, 2 LLM decoder layers" in done.stderr     # CLIP: embeddings + 2 layers
    b = load_file(str(tmp_path / "fsdp" / "final" / "model.safetensors"))

    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max |single - fsdp| = {worst:.2e}")
    assert worst < 5e-5, f"FSDP weights differ from the single-process run by up to {worst:.2e}"
    for ra, rb in zip(log_rows(tmp_path / "single"), log_rows(tmp_path / "fsdp"), strict=True):
        assert abs(ra["loss"] - rb["loss"]) < 1e-4 * max(1.0, ra["loss"]), (ra, rb)
        assert abs(ra["grad_norm"] - rb["grad_norm"]) < 1e-3 * ra["grad_norm"], (ra, rb)
    # the sharded checkpoint is written in the single-process layout: same tensors, same optimizer keys
    for name in ("model/model.safetensors", "optimizer.safetensors"):
        sa = load_file(str(tmp_path / "single" / "checkpoints" / "step_000002" / name))
        sb = load_file(str(tmp_path / "fsdp" / "checkpoints" / "step_000002" / name))
        assert sa.keys() == sb.keys(), name
        assert all(sa[k].shape == sb[k].shape for k in sa), name


def test_sharded_lora_run_in_bf16_resumes_exactly(shapes_dir, tmp_path):
    """LoRA over a sharded frozen LLM, a frozen (replicated, feature-cached) encoder, bf16 mixed precision: a run
    stopped after 2 steps and resumed ends with the weights of the uninterrupted run."""
    def config(out):
        cfg = tiny_run_config(shapes_dir, out, steps=4)
        cfg.train.batch_size, cfg.train.train_vision, cfg.train.lora_r = 2, False, 4
        cfg.train.strategy, cfg.train.precision = "fsdp", "bf16"
        return cfg

    launch(config(tmp_path / "straight"), tmp_path, "straight")
    split = config(tmp_path / "split")
    split.train.stop_after = 2
    launch(split, tmp_path, "split")
    assert (tmp_path / "split" / "checkpoints" / "step_000002").is_dir()
    split.train.stop_after, split.train.resume = None, True
    launch(split, tmp_path, "resumed")

    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and any("lora_" in k for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    rows_a = log_rows(tmp_path / "straight")
    rows_b = log_rows(tmp_path / "split")
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6), (ra, rb)
