"""Shared fixtures: tiny ShapesWorld datasets and tiny random-initialised models (nothing downloaded).

Session-scoped: each is built once and read only by the tests. Plain helpers (configs) are in ``support.py``.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from support import groma_config, tiny_model_config
from vlbridge.data.shapesworld import ShapesWorldConfig, generate

# lmms-eval's harness tests run in their own environment (`make test-lmms`), not in the main suite.
collect_ignore = ["lmms"]


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


@pytest.fixture(scope="session")
def grounding_data(tmp_path_factory):
    """A tiny ShapesWorld with grounded captions and absent-object questions (for region-token models)."""
    out = tmp_path_factory.mktemp("grounding_shapes")
    generate(ShapesWorldConfig(n=30, seed=5, image_size=32, object_size=[0.25, 0.3, 0.35, 0.45],
                               extra_tasks=["gcap", "rec_neg"]), out)
    return out


@pytest.fixture(scope="session")
def groma_model(grounding_data):
    from vlbridge.data.records import load_records
    from vlbridge.models.build import build_model
    torch.manual_seed(0)
    records = load_records(grounding_data / "train.json")
    return build_model(groma_config(), [t.text for r in records for t in r.turns]).eval()


@pytest.fixture(scope="session")
def answering_model(untied_tiny_model):
    """The untied tiny model with weights redrawn at std 0.2, so its answers depend on image and question."""
    from serve_support import redraw
    return redraw(untied_tiny_model)


@pytest.fixture(scope="session")
def lavit_model(shapes_dir):
    """A tiny LaVIT model (weights redrawn, palette random) whose painted images differ per code."""
    from serve_support import LAVIT_OPTIONS, redraw
    from vlbridge.data.records import load_records
    from vlbridge.models.build import build_model
    torch.manual_seed(0)
    texts = [t.text for r in load_records(shapes_dir / "train.json") for t in r.turns] + ["Draw a red circle"]
    model = redraw(build_model(tiny_model_config("lavit", LAVIT_OPTIONS), texts).eval())
    palette = model.connector.visual_tokenizer.pixel_decoder.palette        # unfitted: all black
    palette.copy_(torch.rand(palette.shape, generator=torch.Generator().manual_seed(0)))
    return model

