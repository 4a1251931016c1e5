"""Helpers shared by the tests: tiny model and run configs (random-initialised, built from configs)."""
from __future__ import annotations

import copy

import torch

from vlbridge.config import ConnectorConfig, LLMConfig, ModelConfig, RunConfig, TrainConfig, VisionConfig

EMU_OPTIONS = {"num_queries": 4, "layers": 1, "hidden": 32, "heads": 2, "decoder_width": 16, "decoder_layers": 1,
               "decoder_heads": 2, "decoder_channels": [8, 8, 8]}
GROMA_OPTIONS = {"max_regions": 4, "max_user_regions": 2, "dim": 16, "hidden": 32, "roi_size": 2,
                 "proposer_convs": 1}


def tiny_model_config(connector: str = "mlp", options: dict | None = None) -> ModelConfig:
    vision = VisionConfig(arch=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8))
    llm = LLMConfig(arch=dict(model_type="llama", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                              tie_word_embeddings=True), max_length=512, tokenizer_vocab=400)
    return ModelConfig(vision, ConnectorConfig(connector, options or {}), llm)


def tiny_run_config(data_dir, out_dir, steps: int = 6) -> RunConfig:
    train = TrainConfig(stage="instruct", train_vision=True, steps=steps, batch_size=4, lr=3e-3, warmup_steps=2,
                        eval_every=0, eval_batches=1, save_every=0, log_every=1)
    cfg = RunConfig(model=tiny_model_config(), train=train, out=str(out_dir))
    cfg.data.path = str(data_dir)
    return cfg


def groma_config(**options) -> ModelConfig:
    return tiny_model_config("groma", {**GROMA_OPTIONS, **options})


def emu_config(**options) -> ModelConfig:
    return tiny_model_config("emu", {**EMU_OPTIONS, **options})


def redraw(model, std: float = 0.2, seed: int = 0):
    """A copy of ``model`` with its LLM and connector matrices redrawn at ``std``: at the default init (0.02) a random
    LLM ignores its context and repeats one token, which would make equalities between generation paths trivial."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(m.llm.parameters()) + list(m.connector.parameters()):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return m.eval()
