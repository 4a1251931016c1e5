"""Training loop: exact resume, atomic checkpoints, stages and per-module learning rates, schedule."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from support import tiny_run_config
from vlbridge.train import checkpoint as ckpt_mod
from vlbridge.train.checkpoint import latest_checkpoint
from vlbridge.train.schedule import warmup_cosine
from vlbridge.train.trainer import Trainer, train


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize("group_by_length", [False, True])
def test_resume_equals_uninterrupted(shapes_dir, tmp_path, group_by_length):
    """N steps + resume + N steps gives bit-identical weights to 2N steps straight."""
    n = 3
    straight = tiny_run_config(shapes_dir, tmp_path / "straight", steps=2 * n)
    straight.train.grad_accum = 2            # exercise accumulation and the data position too
    straight.train.group_by_length = group_by_length
    final_a = train(straight)

    split = tiny_run_config(shapes_dir, tmp_path / "split", steps=2 * n)
    split.train.grad_accum = 2
    split.train.group_by_length = group_by_length
    split.train.stop_after = n
    stopped = train(split)
    assert stopped.name == f"step_{n:06d}" and not (tmp_path / "split" / "final").exists()
    split.train.stop_after = None
    split.train.resume = True
    final_b = train(split)

    a, b = weights(final_a), weights(final_b)
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"weights differ after resume: {changed[:5]}"
    # and training did move the weights (the comparison is not between two untouched models)
    init = tiny_run_config(shapes_dir, tmp_path / "one", steps=1)
    w1 = weights(train(init))
    assert any(not torch.equal(w1[k], a[k]) for k in a)


def test_resume_restores_optimizer_and_data_position(shapes_dir, tmp_path):
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=4)
    cfg.train.stop_after = 2
    train(cfg)
    state = json.loads((latest_checkpoint(tmp_path / "run" / "checkpoints") / "trainer_state.json").read_text())
    assert state["trainer"]["step"] == 2
    assert state["trainer"]["batch_in_epoch"] + state["trainer"]["epoch"] > 0
    assert state["scheduler"]["last_epoch"] == 2
    opt = load_file(str(latest_checkpoint(tmp_path / "run" / "checkpoints") / "optimizer.safetensors"))
    assert any(k.endswith("exp_avg_sq") for k in opt)


def test_interrupted_checkpoint_write_keeps_last_good(shapes_dir, tmp_path, monkeypatch):
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=4)
    cfg.train.stop_after = 2
    train(cfg)
    root = tmp_path / "run" / "checkpoints"
    good = latest_checkpoint(root)
    good_weights = weights(good / "model")

    real_save_file = ckpt_mod.save_file

    def crash_midway(tensors, path, *a, **k):
        if path.endswith("optimizer.safetensors"):
            Path(path).write_bytes(b"partial")           # a torn write ...
            raise OSError("disk full (simulated)")       # ... then the process dies
        return real_save_file(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt_mod, "save_file", crash_midway)
    cfg.train.stop_after = None
    cfg.train.resume = True
    with pytest.raises(OSError, match="simulated"):
        train(cfg)
    assert latest_checkpoint(root) == good
    assert all(torch.equal(good_weights[k], v) for k, v in weights(good / "model").items())
    assert not any(p.name.startswith("step_") and p != good for p in root.iterdir())

    monkeypatch.setattr(ckpt_mod, "save_file", real_save_file)   # the next run resumes from the good one
    final = train(cfg)
    assert (final / "model.safetensors").is_file()
    assert not list(root.glob(".tmp-*")), "stray temporary checkpoint dirs are cleaned up"


def test_refuses_to_overwrite_checkpoints_without_resume(shapes_dir, tmp_path):
    from vlbridge.errors import UserError
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=1)
    final = train(cfg)
    weights = (final / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="--resume to continue it, --overwrite"):
        train(cfg)
    assert (final / "model.safetensors").read_bytes() == weights
    cfg.train.seed = 1
    assert train(cfg, overwrite=True) == final and (final / "model.safetensors").read_bytes() != weights


def test_align_stage_trains_only_the_connector(shapes_dir, tmp_path):
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=2)
    cfg.train.stage = "align"
    trainer = Trainer(cfg)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(2):
        trainer.train_step()
    after = trainer.model.state_dict()
    moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"connector"}
    assert {g["name"].split(".")[0] for g in trainer.optimizer.param_groups} == {"connector"}


def test_frozen_batchnorm_encoder_stays_unchanged(shapes_dir, tmp_path):
    """A frozen ResNet keeps its BatchNorm statistics: it runs in eval mode through training and validation."""
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=3)
    cfg.model.vision.arch = dict(model_type="resnet", num_channels=3, embedding_size=16, hidden_sizes=[16, 32],
                                 depths=[1, 1], layer_type="basic", downsample_in_first_stage=False)
    cfg.model.vision.image_size = 32
    cfg.train.train_vision, cfg.train.eval_batches = False, 1
    trainer = Trainer(cfg)
    trainer.setup()
    vision = trainer.model.vision
    before = {k: v.clone() for k, v in vision.state_dict().items()}
    llm_before = {k: v.clone() for k, v in trainer.model.llm.state_dict().items()}
    assert any("running_mean" in k for k in before)
    trainer.train_step()
    trainer.validate()                                   # eval() then train() again
    trainer.train_step()
    assert not vision.training and trainer.model.llm.training and trainer.model.connector.training
    assert all(torch.equal(before[k], v) for k, v in vision.state_dict().items())
    assert any(not torch.equal(llm_before[k], v) for k, v in trainer.model.llm.state_dict().items())  # LLM trained


def test_per_module_learning_rates_and_schedule(shapes_dir, tmp_path):
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=10)
    cfg.train.lr, cfg.train.lr_vision, cfg.train.lr_llm = 1e-3, 1e-4, 5e-4
    cfg.train.warmup_steps = 2
    trainer = Trainer(cfg)
    trainer.setup()
    peak = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert peak["vision.decay"] == pytest.approx(1e-4 * 0.5)          # warm-up step 0 of 2
    assert peak["llm.decay"] == pytest.approx(5e-4 * 0.5)
    assert peak["connector.decay"] == pytest.approx(1e-3 * 0.5)
    assert all(g["weight_decay"] == 0.0 for g in trainer.optimizer.param_groups if g["name"].endswith("no_decay"))


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, total=100, warmup=10, min_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))              # monotone decay after warm-up
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_run_dir_has_resolved_config_and_log(shapes_dir, tmp_path):
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=2)
    cfg.train.eval_every = 1
    final = train(cfg)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["steps"] == 2 and saved["model"]["connector"]["name"] == "mlp"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in log) and any("tokens_per_s" in r for r in log)
    model_cfg = json.loads((final / "config.json").read_text())
    assert model_cfg["model_type"] == "vlbridge" and model_cfg["llm"]["arch"]["model_type"] == "llama"


def test_lora_instruct_stage_trains_adapters_and_round_trips(shapes_dir, tmp_path):
    cfg = tiny_run_config(shapes_dir, tmp_path / "run", steps=2)
    cfg.train.lora_r, cfg.train.train_vision = 4, False
    trainer = Trainer(cfg)
    trainer.setup()
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("connector.") or "lora_" in n for n in trainable)
    assert any("lora_" in n for n in trainable)
    final = trainer.train()
    from vlbridge.models.vlm import VLBridgeModel
    again = VLBridgeModel.from_pretrained(final)
    assert again.lora == {"r": 4, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    a, b = trainer.model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _frozen_resnet_config(shapes_dir, out, steps: int):
    cfg = tiny_run_config(shapes_dir, out, steps=steps)
    cfg.model.vision.arch = dict(model_type="resnet", num_channels=3, embedding_size=16, hidden_sizes=[16, 32],
                                 depths=[1, 1], layer_type="basic", downsample_in_first_stage=False)
    cfg.model.vision.image_size = 32
    cfg.train.train_vision = False
    return cfg


def test_frozen_feature_cache_changes_nothing_but_the_work(shapes_dir, tmp_path):
    """Training with the frozen encoder's features cached gives the same losses and weights as without; each
    image is encoded once; a trainable encoder gets no cache."""
    runs = {}
    for mb in (0.0, 64.0):
        cfg = _frozen_resnet_config(shapes_dir, tmp_path / f"run{mb}", steps=40)
        cfg.train.cache_vision_features = mb
        trainer = Trainer(cfg)
        trainer.setup()
        losses = [trainer.train_step()["loss"] for _ in range(40)]     # 40 x 4 records: several epochs
        runs[mb] = losses, trainer.model.state_dict(), trainer.model.vision.cache
    (plain, w_plain, none), (cached, w_cached, cache) = runs[0.0], runs[64.0]
    assert none is None and cache is not None
    assert cached == plain
    assert all(torch.equal(w_plain[k], w_cached[k]) for k in w_plain)
    assert cache.misses == len(cache.store) and cache.hits > cache.misses     # later epochs were lookups
    trainable = tiny_run_config(shapes_dir, tmp_path / "trainable", steps=2)  # train_vision=True
    trainer = Trainer(trainable)
    trainer.setup()
    assert trainer.model.vision.cache is None


def test_feature_cache_keys_by_pixels_and_stays_within_its_budget():
    from vlbridge.connectors.base import VisualFeatures
    from vlbridge.models.feature_cache import FeatureCache
    calls = []

    def encode(px):                                    # a stand-in encoder: features = mean pixel per channel
        calls.append(len(px))
        f = px.mean((2, 3))[:, None, :].expand(-1, 4, -1).clone()          # [B, 4, 3]
        return VisualFeatures(features=f, grid=(2, 2), layers=[f])
    a, b = torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8)
    cache = FeatureCache(max_mb=1.0)
    first = cache.features(a, encode)
    again = cache.features(torch.cat([a[1:], b, a[:1]]), encode)
    assert calls == [2, 1]                               # only the new image was encoded
    assert torch.equal(again.features[0], first.features[1]) and torch.equal(again.features[2], first.features[0])
    assert torch.equal(again.features[1], encode(b).features[0])
    tiny = FeatureCache(max_mb=1e-4)                     # 104 bytes: room for one 48-byte entry (x2 tensors)
    tiny.features(a, encode)
    assert len(tiny.store) == 1 and tiny.bytes <= 1e-4 * 2 ** 20
    out = tiny.features(a, encode)                       # the uncached image is still answered correctly
    assert torch.equal(out.features, first.features)
