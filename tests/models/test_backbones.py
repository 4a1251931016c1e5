"""Any HF vision encoder and causal LM plug in: from configs (CLIP, SigLIP, DINOv2 x Llama, Qwen2) and from
saved directories by path; feature layers and CLS handling are configurable."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, Qwen2Config

from support import tiny_model_config
from vlbridge.config import VisionConfig
from vlbridge.models.build import build_model
from vlbridge.models.vision import VisionTower

TEXTS = ["What color is the circle?", "red", "a small blue square.", "[0.125,0.250,0.375,0.500]"]

VISION_ARCHS = {
    "clip": dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, image_size=32, patch_size=8),
    "siglip": dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, image_size=32, patch_size=8),
    "dinov2": dict(model_type="dinov2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, image_size=32, patch_size=8),
}
LLM_ARCHS = {
    "llama": dict(model_type="llama", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
    "qwen2": dict(model_type="qwen2", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
}


@pytest.mark.parametrize("vision", sorted(VISION_ARCHS))
@pytest.mark.parametrize("llm", sorted(LLM_ARCHS))
def test_encoder_llm_combinations_train_and_generate(vision, llm):
    cfg = tiny_model_config()
    cfg.vision.arch, cfg.llm.arch = dict(VISION_ARCHS[vision]), dict(LLM_ARCHS[llm])
    torch.manual_seed(0)
    model = build_model(cfg, TEXTS)
    feats = model.vision(torch.randn(2, 3, 32, 32))
    assert feats.grid == (4, 4) and feats.features.shape == (2, 16, 32)       # CLS dropped by default
    ids, labels = model.builder.build([_turn("user", "<image>\nWhat color is the circle?"), _turn("assistant", "red")])
    from vlbridge.data.dataset import Batch
    batch = Batch([torch.tensor(ids)], [torch.tensor(labels)], torch.randn(1, 3, 32, 32), [1])
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.n_tokens == len(model.builder.encode("red")) + 1
    assert model.connector.net[0].weight.grad.abs().sum() > 0


def test_feature_layers_concatenate_and_cls_is_optional():
    arch = dict(VISION_ARCHS["clip"])
    tower = VisionTower(VisionConfig(arch=arch, feature_layers=[-1, -2]))
    x = torch.randn(2, 3, 32, 32)
    feats = tower(x)
    assert tower.out_dim == 64 and feats.features.shape == (2, 16, 64)
    hidden = tower.model(pixel_values=x, output_hidden_states=True).hidden_states
    assert torch.equal(feats.features[..., :32], hidden[-1][:, 1:])          # layer order kept, CLS dropped
    assert torch.equal(feats.features[..., 32:], hidden[-2][:, 1:])
    with_cls = VisionTower(VisionConfig(arch=arch, keep_cls=True), model=tower.model)(x)
    assert with_cls.features.shape == (2, 17, 32) and torch.equal(with_cls.features[:, 0], hidden[-1][:, 0])


def test_backbones_load_by_path(tmp_path):
    """Hugging Face directories (as users download them) load through name_or_path."""
    torch.manual_seed(0)
    vis_dir, llm_dir = tmp_path / "clip", tmp_path / "qwen2"
    clip = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in VISION_ARCHS["clip"].items() if k != "model_type"}))
    clip.save_pretrained(vis_dir)
    scratch = build_model(tiny_model_config(), TEXTS)
    scratch.tokenizer.save_pretrained(llm_dir)
    qwen = AutoModelForCausalLM.from_config(Qwen2Config(**{k: v for k, v in LLM_ARCHS["qwen2"].items()
                                                           if k != "model_type"}, vocab_size=len(scratch.tokenizer)))
    qwen.save_pretrained(llm_dir)

    cfg = tiny_model_config()
    cfg.vision.name_or_path, cfg.llm.name_or_path = str(vis_dir), str(llm_dir)
    model = build_model(cfg)
    for ours, theirs in ((model.vision.model, clip), (model.llm, qwen)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        # the Qwen2 tokenizer class may add a token of its own: rows beyond the checkpoint's are new
        assert all(torch.equal(a[k][: len(b[k])], b[k]) for k in a)
    model.save_pretrained(tmp_path / "vlm")                                   # saved without the original paths
    from vlbridge.models.vlm import VLBridgeModel
    again = VLBridgeModel.from_pretrained(tmp_path / "vlm")
    assert again.cfg.vision.name_or_path is None and again.llm.config.model_type == "qwen2"
    sd1, sd2 = model.state_dict(), again.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def _turn(role, text):
    from vlbridge.data.records import Turn
    return Turn(role, text)
