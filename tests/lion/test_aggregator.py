"""The Vision Aggregator and the lion connector's branches, as properties:

- the aggregator reads the intended layers: perturbing an encoder layer it does not read changes nothing,
  perturbing one it reads changes branch B's tokens (and never branch A's, which read the last layer only);
- layer 1 attends to the deeper key layer, layer 2 to the shallower; default key layers exist for any depth;
- conv maps of other sizes are resampled to the query grid (or attended natively); a fresh aggregator passes
  the normalised query stream through; the branches option keeps A, B or both (A's tokens first).
"""
from __future__ import annotations

import pytest
import torch

from vlbridge.connectors import VisualFeatures, build_connector
from vlbridge.lion.aggregator import VisionAggregator, position_codes

QF = {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "num_queries": 3}
VIS, LLM, GRID = 16, 24, (4, 4)


def connector(**options):
    torch.manual_seed(0)
    c = build_connector("lion", {"qformer": QF, "aggregator_heads": 2, "key_layers": [2, 1], "region_zero_init": False,
                                 **options}, VIS, LLM, GRID).eval()
    with torch.no_grad():                 # the residual branches start at zero: give them weights to see through
        for name, p in c.named_parameters():
            if "aggregator" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return c


def features(seed: int = 0) -> VisualFeatures:
    """ViT-like tokens: 4 hidden states [B, 1 + 16, D] (CLS first); the feature layer is the last."""
    g = torch.Generator().manual_seed(seed)
    hidden = {i: torch.randn(2, 17, VIS, generator=g) for i in range(4)}
    return VisualFeatures(features=hidden[3][:, 1:], grid=GRID, hidden=hidden)


def test_the_aggregator_reads_exactly_its_layers():
    c = connector()
    assert c.encoder_layers() == [2, 1]
    base = features()
    with torch.no_grad():
        ref = c(base).tokens                                              # [B, 3 + 16, D_llm]
        unread = features()
        unread.hidden[0] = unread.hidden[0] + 5.0                         # a layer it does not read
        assert torch.equal(c(unread).tokens, ref)
        for layer in (1, 2):                                              # the two it reads
            read = features()
            read.hidden[layer] = read.hidden[layer] + torch.randn_like(read.hidden[layer])
            out = c(read).tokens
            assert torch.equal(out[:, :3], ref[:, :3])                    # branch A: the feature layer only
            assert not torch.allclose(out[:, 3:], ref[:, 3:])            # branch B: changed


def test_layer_one_attends_to_the_deeper_layer():
    c = connector()
    keys = []
    for layer in c.aggregator.layers:
        layer.cross_attn.register_forward_hook(lambda m, args, kwargs, out: keys.append(args[1]), with_kwargs=True)
    feats = features()
    with torch.no_grad():
        c(feats)
    assert torch.equal(keys[0], feats.layer_tokens(2)) and torch.equal(keys[1], feats.layer_tokens(1))


def test_branches_alone_and_together():
    feats = features()
    both, image, region = connector(), connector(branches="image"), connector(branches="region")
    with torch.no_grad():
        assert both(feats).tokens.shape == (2, 3 + 16, LLM) and both.num_tokens() == 19
        assert image(feats).tokens.shape == (2, 3, LLM) and image.encoder_layers() == []
        assert region(feats).tokens.shape == (2, 16, LLM) and region.wants_text is False
    assert both.wants_text and image.wants_text                          # the Q-Former reads the instruction
    with pytest.raises(ValueError, match="branches"):
        build_connector("lion", {"branches": "neither"}, VIS, LLM, GRID)


@pytest.mark.parametrize("key_grid", ["query", "native"])
def test_conv_maps_of_other_sizes(key_grid):
    agg = VisionAggregator(16, [8, 4], heads=2, intermediate=32, key_grid=key_grid, use_position_codes=True)
    queries = torch.randn(2, 16, 16)                                      # a 4x4 map as tokens
    maps = [torch.randn(2, 8, 8, 8), torch.randn(2, 4, 8, 8)]             # earlier stages: 8x8
    out = agg(queries, maps, (4, 4))
    assert out.shape == (2, 16, 16)
    assert agg.key_tokens(maps[0], (4, 4)).shape[1] == (16 if key_grid == "query" else 64)
    with pytest.raises(ValueError, match="2 layers but got 1"):
        agg(queries, maps[:1], (4, 4))


def test_a_fresh_aggregator_passes_the_normalised_queries_through():
    agg = VisionAggregator(16, [16, 16], heads=2, intermediate=32)
    q = torch.randn(2, 16, 16) * 3 + 1
    with torch.no_grad():
        out = agg(q, [torch.randn(2, 16, 4, 4)] * 2, (4, 4))
    expected = torch.nn.functional.layer_norm(q, (16,), eps=1e-12)
    assert torch.allclose(out, expected, atol=1e-5)


def test_position_codes_line_up_across_resolutions():
    coarse, fine = position_codes(2, 2, 8), position_codes(4, 4, 8)
    assert coarse.shape == (4, 8) and fine.shape == (16, 8)
    assert not torch.allclose(coarse[0], coarse[3])
    assert position_codes(1, 1, 3).abs().sum() == 0                      # fewer than 4 dims: no code


def test_default_key_layers_exist_for_any_encoder_depth(tiny_model):
    from support import tiny_model_config
    from vlbridge.models.vlm import VLBridgeModel
    import copy
    model = VLBridgeModel(tiny_model_config("lion", {"qformer": QF, "aggregator_heads": 2}),
                          copy.deepcopy(tiny_model.tokenizer))
    n = len(model.vision.hidden_shapes())                                 # 3: embeddings + 2 layers
    layers = model.connector.key_layer_ids
    assert len(set(layers)) == 2 and all(0 <= i < n - 1 for i in layers) and layers[0] > layers[1]
    assert set(model.vision.extra_layers) == set(layers)
