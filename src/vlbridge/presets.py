"""Named presets: complete RunConfigs that CLI flags then override.

- ``tiny-cpu``: a tiny ResNet encoder + pixel-shuffle connector (2x2 patches per token, InternVL) + 4-layer
  Llama-style LM, all built from configs and trained from scratch on ShapesWorld in a few minutes on a laptop
  CPU (nothing to download);
  ``tiny-cpu-vit``: the same with a CLIP-style ViT encoder.
- ``tiny-cpu-lion``: the tiny-cpu stack with the ``lion`` connector scaled to it and LION's three stages
  (``vlbridge recipe lion``);
- ``tiny-cpu-emu``: the tiny-cpu stack with Emu's connector at CPU scale (16 embeddings per image, Emu2's
  pooled path, regression weight 1), for ShapesWorld documents (``vlbridge data shapes-docs``);
- ``clip-qwen2`` / ``siglip-llama``: real checkpoints given by path (``--model.vision.name_or_path``,
  ``--model.llm.name_or_path``); LLaVA-1.5 recipe: images padded to a square and preprocessed by the encoder's
  own image processor, the instruct LLM's own chat template, align (connector only, lr 1e-3), then instruct
  (docs/real-checkpoints.md).
"""
from __future__ import annotations

from typing import Callable

from .config import ConnectorConfig, LLMConfig, ModelConfig, RunConfig, TrainConfig, VisionConfig
from .errors import unknown_name


def tiny_llm() -> LLMConfig:
    # 4 layers of width 128, 4 heads of 32, MLP 2x the width (256, narrower than Llama's 8/3 x for speed; how
    # it was chosen: docs/notes/demo.md)
    return LLMConfig(arch=dict(model_type="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                               num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                               tie_word_embeddings=True, rms_norm_eps=1e-5),
                     chat_template="plain", max_length=512)


def tiny_train(steps: int = 800) -> TrainConfig:
    """The demo's schedule: ``steps`` (default 800) of batch 16 at lr 1e-3, 40 warm-up steps, records grouped by
    length (how it was chosen: docs/notes/demo.md)."""
    return TrainConfig(stage="instruct", train_vision=True, steps=steps, batch_size=16, lr=1e-3,
                       warmup_steps=40, weight_decay=0.01, eval_every=200, save_every=200,
                       group_by_length=True,       # ShapesWorld records vary in length: less padding
                       ddp_find_unused_parameters=False)   # under torchrun: every trainable parameter is used


def tiny_cpu() -> RunConfig:
    """A tiny ResNet (conv inductive bias: learns shapes fast from scratch) + pixel shuffle + 4-layer Llama.

    Pixel shuffle turns the 8x8 patch grid into 16 tokens without discarding anything (each token holds a 2x2
    block's features), so records are shorter than with the MLP's 64 tokens at no loss on colour and shape
    (docs/notes/demo.md).

    For the demo the encoder is first pretrained with ``vlbridge pretrain-vision`` (there is no CLIP to
    download), passed as ``--model.vision.name_or_path`` and frozen (``--train.train_vision false``), as in
    LLaVA; without it the same architecture is built from ``arch`` and trains end to end through the LLM's
    loss (which learns colours before shapes; docs/notes/demo.md).
    """
    vision = VisionConfig(arch=dict(model_type="resnet", num_channels=3, embedding_size=32, hidden_sizes=[64, 128],
                                    depths=[1, 1], layer_type="basic", downsample_in_first_stage=False),
                          image_size=64, feature_layers=[-1])
    return RunConfig(model=ModelConfig(vision, ConnectorConfig("pixel_shuffle"), tiny_llm()), train=tiny_train(),
                     preset="tiny-cpu")


def tiny_cpu_vit() -> RunConfig:
    """The same stack with a CLIP-style ViT encoder (8x8 patches of a 64x64 image), built from scratch."""
    cfg = tiny_cpu()
    cfg.model.vision = VisionConfig(arch=dict(model_type="clip_vision_model", hidden_size=128, intermediate_size=512,
                                              num_hidden_layers=3, num_attention_heads=4, image_size=64,
                                              patch_size=8), feature_layers=[-1])
    cfg.preset = "tiny-cpu-vit"
    cfg.train.ddp_find_unused_parameters = True     # the CLIP encoder's final norm is not in the feature path
    return cfg


def tiny_cpu_lion() -> RunConfig:
    """tiny-cpu with the ``lion`` connector at the tiny width (an 8-query, 2-layer Q-Former; the aggregator on
    the ResNet's 8x8 map, reading its two earlier stages resampled to 8x8, with position codes since conv maps
    carry none) and LION's stages image -> region -> mixed. The LLM stays frozen in them, as LION's FlanT5 (the
    recipe pretrains it on the data's text first: there is no pretrained tiny LLM to download)."""
    cfg = tiny_cpu()
    options = {"qformer": {"num_queries": 8, "hidden": 128, "layers": 2, "heads": 4, "intermediate": 512,
                           "cross_attention_every": 1, "max_text_len": 64},
               "aggregator_heads": 4, "position_codes": True}
    cfg.model.connector = ConnectorConfig("lion", options)
    cfg.train.train_vision = False
    cfg.train.stages = ["image", "region", "mixed"]
    cfg.train.stage_schedules = {"image": {"steps": 600}, "region": {"steps": 300, "warmup_steps": 20},
                                 "mixed": {"steps": 300, "warmup_steps": 20}}
    cfg.train.ddp_find_unused_parameters = True        # a batch of one task type leaves the other adapter unused
    cfg.preset = "tiny-cpu-lion"
    return cfg


def tiny_cpu_emu() -> RunConfig:
    """tiny-cpu with the `emu` connector at CPU scale: Emu2's path (the 8x8 patch grid average-pooled to 16
    embeddings + Linear), regression weight 1, a small palette decoder. Emu1's Causal Transformer (`pool` false,
    16 queries x 2 layers x 128) learnt to read far more slowly at this budget (docs/notes/emu.md)."""
    cfg = tiny_cpu()
    cfg.model.connector = ConnectorConfig("emu", {"num_queries": 16, "pool": True, "layers": 2, "hidden": 128,
                                                  "heads": 4, "decoder_width": 64, "decoder_channels": [32, 16, 16]})
    cfg.preset = "tiny-cpu-emu"
    return cfg


def clip_qwen2() -> RunConfig:
    vision = VisionConfig(name_or_path="openai/clip-vit-large-patch14-336", feature_layers=[-2], pad_to_square=True)
    llm = LLMConfig(name_or_path="Qwen/Qwen2-0.5B-Instruct", chat_template="tokenizer", max_length=2048)
    train = TrainConfig(stage="align", steps=2000, batch_size=8, grad_accum=4, lr=1e-3, warmup_steps=60,
                        lr_llm=2e-5, save_every=500, eval_every=500)
    return RunConfig(model=ModelConfig(vision, ConnectorConfig("mlp"), llm), train=train, preset="clip-qwen2")


def siglip_llama() -> RunConfig:
    vision = VisionConfig(name_or_path="google/siglip-so400m-patch14-384", feature_layers=[-2], pad_to_square=True)
    llm = LLMConfig(name_or_path="meta-llama/Llama-3.2-1B-Instruct", chat_template="tokenizer", max_length=2048)
    train = TrainConfig(stage="align", steps=2000, batch_size=8, grad_accum=4, lr=1e-3, warmup_steps=60,
                        lr_llm=2e-5, save_every=500, eval_every=500)
    return RunConfig(model=ModelConfig(vision, ConnectorConfig("mlp"), llm), train=train, preset="siglip-llama")


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "tiny-cpu": tiny_cpu,
    "tiny-cpu-vit": tiny_cpu_vit,
    "tiny-cpu-lion": tiny_cpu_lion,
    "tiny-cpu-emu": tiny_cpu_emu,
    "clip-qwen2": clip_qwen2,
    "siglip-llama": siglip_llama,
}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    return PRESETS[name]()
