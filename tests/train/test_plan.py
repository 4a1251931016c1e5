"""`vlbridge plan` (vlbridge.train.plan): a memory plan built on the meta device.

Its counts are checked against real models: parameters and trainable parameters per part equal those of the
model the trainer builds (full fine-tuning, align, LoRA), and the activation bytes it measures on meta for a
decoder layer equal what autograd keeps for the same layer on real CPU tensors. FSDP divides what it shards.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from support import tiny_model_config, tiny_run_config
from vlbridge.cli.main import main
from vlbridge.models.compile import decoder_layers
from vlbridge.train.plan import FusedAttention, layer_activations, make_plan, saved_bytes
from vlbridge.train.stages import apply_stage, resolve_stage

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hf"


def plan_config(tmp_path, **train):
    cfg = tiny_run_config(tmp_path, tmp_path / "out")
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.mark.parametrize("stage, lora", [("instruct", 0), ("align", 0), ("instruct", 4)])
def test_counts_equal_the_model_the_trainer_builds(tiny_model, tmp_path, stage, lora):
    cfg = plan_config(tmp_path, stage=stage, lora_r=lora, train_vision=stage == "instruct" and not lora)
    cfg.model.llm.arch["vocab_size"] = len(tiny_model.tokenizer)        # what the built model's vocabulary is
    plan = make_plan(cfg, seq_len=64)
    model = copy.deepcopy(tiny_model)
    if lora:
        model.apply_lora(lora, cfg.train.lora_alpha, cfg.train.lora_targets)
    counts = apply_stage(model, resolve_stage(model.connector, cfg.train))
    for part in plan.parts:
        assert (part.params, part.trainable) == (counts[part.name][1], counts[part.name][0]), part.name


def test_activations_measured_on_meta_equal_what_autograd_keeps_on_the_cpu():
    from vlbridge.models.llm import build_llm
    cfg = tiny_model_config().llm
    cfg.arch["num_key_value_heads"] = cfg.arch["num_attention_heads"]    # (grouped k/v are counted expanded)
    torch.manual_seed(0)
    real = build_llm(cfg, vocab_size=100)
    layer = decoder_layers(real)[0]
    batch, seq, hidden = 2, 24, real.config.hidden_size
    x = torch.randn(batch, seq, hidden, requires_grad=True)
    positions = torch.arange(seq)[None].expand(batch, seq)
    cos, sin = real.get_decoder().rotary_emb(x, positions)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):   # the CPU's fused kernel
        on_cpu = saved_bytes(lambda: layer(x, position_embeddings=(cos, sin), attention_mask=None,
                                           position_ids=positions))
    with torch.device("meta"):
        meta = build_llm(cfg, vocab_size=100)
    measured = layer_activations(meta, batch, seq, torch.float32, trains=True)
    assert abs(measured - on_cpu) <= 32, (measured, on_cpu)    # the GPU kernel also keeps its RNG seed and offset
    frozen = layer_activations(meta, batch, seq, torch.float32, trains=False)
    assert 0 < frozen < on_cpu                           # frozen weights need no saved inputs for their gradients


def test_fsdp_divides_what_it_shards_and_keeps_a_frozen_encoder_whole(tmp_path):
    one = make_plan(plan_config(tmp_path, train_vision=False), nproc=1, seq_len=64).memory()
    ddp = make_plan(plan_config(tmp_path, train_vision=False), nproc=4, seq_len=64).memory()
    fsdp = make_plan(plan_config(tmp_path, train_vision=False, strategy="fsdp"), nproc=4, seq_len=64)
    sharded = fsdp.memory()
    assert sharded["optimizer (AdamW)"] == pytest.approx(one["optimizer (AdamW)"] / 4)
    assert ddp["gradients"] == pytest.approx(2 * one["gradients"])           # DDP's bucket copy
    vision = next(p for p in fsdp.parts if p.name == "vision")
    assert not vision.sharded and vision.trainable == 0
    assert sharded["weights"] > one["weights"] / 4                           # the encoder stays whole
    assert sharded["activations: llm layers"] == one["activations: llm layers"]


def test_activation_checkpointing_keeps_one_input_per_layer(tmp_path):
    plain = make_plan(plan_config(tmp_path), seq_len=128)
    ckpt = make_plan(plan_config(tmp_path, activation_checkpointing=["llm"]), seq_len=128)
    assert ckpt.activations["llm layers"] < plain.activations["llm layers"]


def test_plan_command_tells_whether_qwen2_7b_fits(capsys):
    """From the real configs alone (no weights): full fine-tuning of Qwen2-7B + CLIP-L does not fit one 80 GB GPU;
    sharded over 8 with activation checkpointing it does."""
    common = ["plan", "--preset", "clip-qwen2", "--vision", str(FIXTURES / "clip-vit-large-patch14-336"),
              "--llm", str(FIXTURES / "Qwen2-7B-Instruct"), "--stage", "instruct", "--batch-size", "4"]
    assert main(common) == 0
    single = capsys.readouterr().out
    assert "7,615,616,512" in single and "80 GB no" in single
    assert main(common + ["--strategy", "fsdp", "--nproc", "8", "--train.activation-checkpointing", "llm"]) == 0
    sharded = capsys.readouterr().out
    assert "80 GB yes" in sharded and "all-gathered units in flight" in sharded
