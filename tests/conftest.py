"""Shared fixtures: a tiny ShapesWorld dataset and tiny random-initialised models (nothing downloaded)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from vlbridge.config import ConnectorConfig, LLMConfig, ModelConfig, RunConfig, TrainConfig, VisionConfig
from vlbridge.data.shapes import ShapesWorldConfig, generate

# lmms-eval's harness tests run in their own environment (`make test-lmms`), not in the main suite.
collect_ignore = ["lmms"]


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


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and thread spinning is very slow on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    generate(ShapesWorldConfig(n=40, seed=3, image_size=32, object_size=[0.25, 0.3, 0.35, 0.45]), out)
    return out


@pytest.fixture(scope="session")
def tiny_model(shapes_dir):
    """A random tiny model with a tokenizer trained on the tiny ShapesWorld text."""
    from vlbridge.data.records import load_records
    from vlbridge.models.build import build_model
    torch.manual_seed(0)
    records = load_records(shapes_dir / "train.json")
    texts = [t.text for r in records for t in r.turns]
    return build_model(tiny_model_config(), texts).eval()


@pytest.fixture(scope="session")
def untied_tiny_model(shapes_dir):
    """Like tiny_model but with an untied LM head: a random tied model just repeats its last input token,
    whatever the image; an untied one gives answers that depend on the image and the question."""
    from vlbridge.data.records import load_records
    from vlbridge.models.build import build_model
    torch.manual_seed(0)
    cfg = tiny_model_config()
    cfg.llm.arch["tie_word_embeddings"] = False
    records = load_records(shapes_dir / "train.json")
    return build_model(cfg, [t.text for r in records for t in r.turns]).eval()
