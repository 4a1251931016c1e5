"""Fixtures for the grounding tests: tiny ShapesWorld with grounded captions and negatives, a tiny groma model.

Test modules import these fixtures, so pytest keeps one definition per module; the data directory and the
model are therefore cached for the whole session here (built once, read-only in the tests).
"""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_model_config

from vlbridge.data.shapesworld import ShapesWorldConfig, generate

GROMA_OPTIONS = {"max_regions": 4, "max_user_regions": 2, "dim": 16, "hidden": 32, "roi_size": 2,
                 "proposer_convs": 1}


_MODELS: dict[str, object] = {}


@pytest.fixture(scope="session")
def grounding_data(tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "grounding_shapes"
    if not (out / "shapesworld.json").is_file():
        generate(ShapesWorldConfig(n=30, seed=5, image_size=32, object_size=[0.25, 0.3, 0.35, 0.45],
                                   extra_tasks=["gcap", "rec_neg"]), out)
    return out


def groma_config(**options):
    return tiny_model_config("groma", {**GROMA_OPTIONS, **options})


@pytest.fixture(scope="session")
def groma_model(grounding_data):
    from vlbridge.data.records import load_records
    from vlbridge.models.build import build_model
    if str(grounding_data) not in _MODELS:
        torch.manual_seed(0)
        records = load_records(grounding_data / "train.json")
        _MODELS[str(grounding_data)] = build_model(groma_config(), [t.text for r in records for t in r.turns]).eval()
    return _MODELS[str(grounding_data)]
