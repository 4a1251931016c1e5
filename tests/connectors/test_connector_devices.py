"""Every connector computes where its inputs are: its forward pass run on the meta device, where any tensor it
makes on the CPU (a mask, an index, a padding row) meets a meta tensor and raises a device mismatch, exactly as
it would on a GPU. Connectors whose forward needs a data-dependent value (how many tokens an image keeps) stop at
that point on meta; the part before it is still checked."""
from __future__ import annotations

import pytest
import torch

from support import GROMA_OPTIONS, tiny_model_config
from vlbridge.connectors import CONNECTORS, build_connector
from vlbridge.connectors.base import VisualFeatures
from vlbridge.models.instruction_text import InstructionText
from vlbridge.models.vision import VisionTower

OPTIONS = {"qformer": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "num_queries": 6,
                       "instruction_aware": True},
           "resampler": {"num_latents": 5, "layers": 2, "heads": 2, "head_dim": 8},
           "cabstractor": {"depth": 1, "hidden": 16, "grid_out": [2, 3]}, "pixel_shuffle": {"factor": 2},
           "pargo": {"layers": 2, "num_global": 4, "tile": [2, 2]}, "lavit": {"image_size": 32},
           "groma": GROMA_OPTIONS}


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_connector_forward_stays_on_its_inputs_device(name):
    torch.manual_seed(0)
    tower = VisionTower(tiny_model_config().vision)
    connector = build_connector(name, OPTIONS.get(name, {}), tower.out_dim, 48, tower.grid)
    connector.bind_vision(tower)
    tower.request_layers(connector.encoder_layers())
    feats = tower(torch.zeros(2, 3, 32, 32))
    meta = lambda t: None if t is None else t.to("meta")
    feats = VisualFeatures(features=meta(feats.features), grid=feats.grid, layers=[meta(t) for t in feats.layers],
                           cls=meta(feats.cls), hidden={i: meta(h) for i, h in feats.hidden.items()})
    if connector.wants_text:
        feats.text = InstructionText(torch.zeros(2, 5, 48, device="meta"), torch.ones(2, 5, dtype=torch.bool,
                                                                                       device="meta"))
    connector.to("meta")
    try:
        out = connector(feats)
    except RuntimeError as e:
        if "cannot be called on meta tensors" in str(e):
            pytest.skip(f"{name}: a data-dependent step (the number of tokens kept) stops the meta run there")
        raise
    assert out.tokens.device.type == "meta"
