"""Devices and mixed precision in the training loop, on the CPU (vlbridge.models.device, vlbridge.models.precision).

The device-dependent code runs here with the CPU as the device: bf16 autocast (fp32 master weights), fp16 with
its gradient scaler (enabled, saved in checkpoints, resumed exactly), frozen parts stored in bf16, LoRA over a
bf16 base, and the choices `auto` makes on a machine without an accelerator.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from support import tiny_run_config
from vlbridge.errors import UserError
from vlbridge.models.device import peak_memory_mb, resolve_device
from vlbridge.models.precision import autocast, grad_scaler, resolve_precision
from vlbridge.train.trainer import Trainer, train

CPU = torch.device("cpu")


def log_rows(run_dir):
    return [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_auto_picks_the_cpu_and_fp32_here_and_refuses_a_missing_gpu():
    assert resolve_device("auto") == CPU
    assert resolve_device("cpu") == CPU
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
    assert peak_memory_mb(CPU) > 0


def test_scaler_is_on_for_fp16_only_and_autocast_computes_in_the_precision():
    assert grad_scaler(CPU, "fp16").is_enabled()
    assert not grad_scaler(CPU, "bf16").is_enabled() and not grad_scaler(CPU, "fp32").is_enabled()
    layer = torch.nn.Linear(4, 4)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        with autocast(CPU, precision):
            assert layer(torch.ones(2, 4)).dtype == dtype
    assert layer.weight.dtype == torch.float32


def test_bf16_autocast_trains_with_fp32_master_weights(shapes_dir, tmp_path):
    fp32 = tiny_run_config(shapes_dir, tmp_path / "fp32", steps=2)
    fp32.train.device = "cpu"
    train(fp32)
    bf16 = tiny_run_config(shapes_dir, tmp_path / "bf16", steps=2)
    bf16.train.precision = "bf16"
    final = train(bf16)
    saved = load_file(str(final / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())              # master weights stay fp32
    a, b = log_rows(tmp_path / "fp32")[0]["loss"], log_rows(tmp_path / "bf16")[0]["loss"]
    assert a != b and abs(a - b) < 0.02 * a                # computed in bf16 (not identical), and close to fp32
    assert log_rows(tmp_path / "bf16")[0]["peak_mem_mb"] > 0


def test_fp16_with_its_gradient_scaler_resumes_exactly(shapes_dir, tmp_path):
    straight = tiny_run_config(shapes_dir, tmp_path / "straight", steps=4)
    straight.train.precision = "fp16"
    a = load_file(str(train(straight) / "model.safetensors"))

    split = tiny_run_config(shapes_dir, tmp_path / "split", steps=4)
    split.train.precision, split.train.stop_after = "fp16", 2
    stopped = train(split)
    scaler = json.loads((stopped / "trainer_state.json").read_text())["scaler"]
    assert scaler["scale"] > 1 and "_growth_tracker" in scaler          # the scaler ran and was saved
    split.train.stop_after, split.train.resume = None, True
    b = load_file(str(train(split) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(r["loss"] == r["loss"] for r in log_rows(tmp_path / "straight"))          # no NaN


def test_frozen_encoder_stored_in_bf16_and_lora_over_a_bf16_llm(shapes_dir, tmp_path):
    cfg = tiny_run_config(shapes_dir, tmp_path / "lora", steps=2)
    cfg.train.train_vision, cfg.train.lora_r, cfg.train.precision = False, 4, "bf16"
    cfg.model.vision.dtype = cfg.model.llm.dtype = "bf16"
    trainer = Trainer(cfg)
    trainer.setup()
    model = trainer.model
    assert {p.dtype for p in model.vision.parameters()} == {torch.bfloat16}
    assert {p.dtype for n, p in model.llm.named_parameters() if "lora_" in n} == {torch.float32}
    assert {p.dtype for n, p in model.llm.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    assert {p.dtype for p in model.connector.parameters()} == {torch.float32}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    m = trainer.train_step()
    assert m["loss"] == m["loss"] and m["grad_norm"] > 0
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before and
               n.startswith("connector."))


def test_an_encoder_that_trains_cannot_be_stored_in_bf16(shapes_dir, tmp_path):
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=1)
    cfg.model.vision.dtype = "bf16"                      # tiny_run_config trains the encoder
    with pytest.raises(UserError, match="trains in this stage"):
        Trainer(cfg).setup()
