"""Connector registry and model persistence (vlbridge.connectors, VLBridgeModel.save_pretrained/from_pretrained).

Checks that every registered connector round-trips through save_pretrained/from_pretrained (config.json
holds its name and options, every tensor and the loss are identical, nothing is pickled), that unknown
connector names/options and non-model directories are clear errors, that ConnectorOutput.per_image and
num_tokens agree with what the connectors produce, that added tokens survive a reload, and that gradients
reach the vision encoder, the connector and the LLM.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
import torch
from safetensors import safe_open

from support import tiny_model_config
from vlbridge.connectors import CONNECTORS, ConnectorOutput, build_connector
from vlbridge.data.dataset import InstructionDataset, collate
from vlbridge.data.records import SkipReport, load_records
from vlbridge.models.vlm import VLBridgeModel

# Non-default options per connector, so the round trip has something to preserve.
OPTIONS = {"linear": {"bias": False}, "mlp": {"depth": 3, "hidden": 24},
           # the peers' defaults are paper-sized (BLIP-2's Q-Former is ~90M parameters): tiny, non-default ones here
           "qformer": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "num_queries": 6,
                       "instruction_aware": True},
           "resampler": {"num_latents": 5, "layers": 2, "heads": 2, "head_dim": 8, "pos_embed": "learned"},
           "cabstractor": {"depth": 1, "hidden": 16, "grid_out": [2, 3]},
           "pixel_shuffle": {"factor": 2, "depth": 1, "norm": False},
           "lavit": {"image_size": 32},          # its pixel decoder upsamples the 4x4 test grid to the 32-px input
           "lion": {"qformer": {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "num_queries": 3},
                    "aggregator_heads": 2, "aggregator_intermediate": 32, "region_hidden": 24, "adapter_bottleneck": 8,
                    "position_codes": True, "region_zero_init": False},
           "emu": {"num_queries": 5, "layers": 1, "hidden": 16, "heads": 2, "decoder_width": 16,
                   "decoder_channels": [8, 8, 8], "regression_loss": "cosine"}}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def make_model(tiny_model, name: str, options: dict | None = None) -> VLBridgeModel:
    """A fresh tiny model with connector `name` (the tokenizer is copied from the shared fixture)."""
    torch.manual_seed(1)
    return VLBridgeModel(tiny_model_config(name, options), copy.deepcopy(tiny_model.tokenizer)).eval()


def make_batch(model, shapes_dir, n: int = 3):
    records = load_records(shapes_dir / "train.json")[:n]
    ds = InstructionDataset(records, model.builder, model.vision.image_transform(), max_length=model.cfg.llm.max_length,
                            visual_tokens_per_image=model.visual_tokens_per_image(), report=SkipReport(),
                            on_error="raise")
    return collate([ds[i] for i in range(len(ds))])


# ----------------------------------------------------------------------------- save / load round trip

@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_connector_round_trips_through_save_and_load(tiny_model, shapes_dir, tmp_path, name):
    options = OPTIONS.get(name, {})
    model = make_model(tiny_model, name, options)
    out = tmp_path / "model"
    model.save_pretrained(out)

    # the directory: config + safetensors weights + tokenizer files, nothing pickled, no temp dirs left
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert all(p.is_file() for p in out.iterdir())
    for p in out.iterdir():
        assert not p.name.endswith(PICKLE_SUFFIXES), p.name
        head = p.read_bytes()[:4]
        if p.suffix == ".safetensors":          # starts with a u64 header length (any byte), then JSON
            safe_open(str(p), "pt").keys()       # raises unless it really is a safetensors file
            continue
        assert not head.startswith(b"\x80"), f"{p.name} looks like a pickle"
        assert not head.startswith(b"PK\x03\x04"), f"{p.name} looks like a torch.save zip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    meta = json.loads((out / "config.json").read_text())
    assert meta["model_type"] == "vlbridge"
    assert meta["connector"]["name"] == name
    saved_options = meta["connector"]["options"]
    assert saved_options == dataclasses.asdict(CONNECTORS[name].Options(**options))
    for key, value in options.items():
        assert saved_options[key] == value

    loaded = VLBridgeModel.from_pretrained(out)
    assert type(loaded.connector) is CONNECTORS[name]
    assert loaded.connector.options_dict() == saved_options
    assert len(loaded.tokenizer) == len(model.tokenizer)
    assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()

    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key

    batch = make_batch(model, shapes_dir)
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    assert torch.isfinite(a.loss)
    assert a.n_tokens == b.n_tokens > 0
    assert torch.equal(a.loss, b.loss)


def test_save_over_an_existing_model_replaces_it(tiny_model, tmp_path):
    out = tmp_path / "model"
    make_model(tiny_model, "linear").save_pretrained(out)
    (out / "stale.txt").write_text("from the previous save")
    model = make_model(tiny_model, "mlp", {"depth": 3})
    model.save_pretrained(out)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "config.json").read_text())["connector"]["name"] == "mlp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_added_tokens_survive_save_and_load(tiny_model, tmp_path):
    model = copy.deepcopy(tiny_model)
    (r0,) = model.add_tokens(["<r0>"])
    vocab = len(model.tokenizer)
    model.save_pretrained(tmp_path / "m")
    loaded = VLBridgeModel.from_pretrained(tmp_path / "m")

    assert len(loaded.tokenizer) == vocab
    assert loaded.tokenizer.convert_tokens_to_ids("<r0>") == r0
    assert loaded.llm.get_input_embeddings().num_embeddings == vocab
    assert loaded.llm.config.vocab_size == vocab
    assert loaded.builder.encode_message("box<r0>here").count(r0) == 1
    assert torch.equal(loaded.llm.get_input_embeddings().weight[r0], model.llm.get_input_embeddings().weight[r0])
    assert loaded.image_token_id == model.image_token_id


def test_from_pretrained_without_config_is_file_not_found(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.json"):
        VLBridgeModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        VLBridgeModel.from_pretrained(tmp_path / "does-not-exist")


def test_from_pretrained_rejects_a_foreign_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="vlbridge"):
        VLBridgeModel.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- registry errors

def test_unknown_connector_name_lists_the_registered_ones(tiny_model):
    with pytest.raises(ValueError) as err:
        build_connector("no-such-connector", {}, 32, 48, (4, 4))
    assert "no-such-connector" in str(err.value)
    for name in CONNECTORS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="no-such-connector"):
        VLBridgeModel(tiny_model_config("no-such-connector"), copy.deepcopy(tiny_model.tokenizer))


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_unknown_connector_option_lists_the_known_ones(tiny_model, name):
    with pytest.raises(ValueError) as err:
        build_connector(name, {"dpeth": 3}, 32, 48, (4, 4))
    message = str(err.value)
    assert "dpeth" in message and name in message
    for field in dataclasses.fields(CONNECTORS[name].Options):
        assert re.search(rf"\b{field.name}\b", message), (field.name, message)
    with pytest.raises(ValueError, match="dpeth"):
        VLBridgeModel(tiny_model_config(name, {"dpeth": 3}), copy.deepcopy(tiny_model.tokenizer))


# ----------------------------------------------------------------------------- connector outputs

def test_per_image_respects_lengths():
    tokens = torch.randn(3, 5, 4)
    parts = ConnectorOutput(tokens=tokens, lengths=torch.tensor([5, 2, 0])).per_image()
    assert [p.shape for p in parts] == [(5, 4), (2, 4), (0, 4)]
    assert torch.equal(parts[0], tokens[0]) and torch.equal(parts[1], tokens[1, :2])
    full = ConnectorOutput(tokens=tokens).per_image()
    assert len(full) == 3 and all(torch.equal(p, t) for p, t in zip(full, tokens))


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_num_tokens_matches_the_forward_output(tiny_model, shapes_dir, name):
    model = make_model(tiny_model, name, OPTIONS.get(name, {}))
    pixels = make_batch(model, shapes_dir, n=2).pixel_values
    with torch.no_grad():
        out = model.encode_images(pixels)
    n_img, M, D = out.tokens.shape
    assert n_img == len(pixels) and D == model.llm_dim
    if model.connector.dynamic:
        assert M <= model.connector.num_tokens()
    else:
        assert M == model.connector.num_tokens() == model.visual_tokens_per_image() - len(model.connector.wrap_tokens)
    assert all(len(t) <= model.visual_tokens_per_image() for t in out.per_image())
    if name in ("linear", "mlp"):                      # one token per patch
        assert M == model.vision.grid[0] * model.vision.grid[1]


def test_mlp_depth_is_the_number_of_linear_layers(tiny_model):
    for depth in (1, 2, 3):
        model = make_model(tiny_model, "mlp", {"depth": depth})
        n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.connector.modules())
        assert n_linear == depth
    with pytest.raises(ValueError):
        make_model(tiny_model, "mlp", {"depth": 0})


# ----------------------------------------------------------------------------- gradients

def test_gradients_reach_vision_connector_and_llm(tiny_model, shapes_dir):
    model = copy.deepcopy(tiny_model).train()
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    batch = make_batch(model, shapes_dir, n=2)
    out = model(batch)
    assert out.n_tokens > 0
    out.loss.backward()

    def nonzero(p):
        return p.grad is not None and bool(p.grad.abs().sum() > 0)

    # connector: every parameter
    for name, p in model.connector.named_parameters():
        assert nonzero(p), f"connector.{name}"
    # LLM: the embeddings and every decoder layer; vision: every encoder layer and the patch embedding
    assert nonzero(model.llm.get_input_embeddings().weight)
    for module, label in ((model.llm, "llm"), (model.vision, "vision")):
        layers: dict[str, bool] = {}
        for name, p in module.named_parameters():
            m = re.search(r"layers\.(\d+)\.", name)
            if m:
                layers[m.group(1)] = layers.get(m.group(1), False) or nonzero(p)
        assert layers and all(layers.values()), (label, layers)
    patch = [p for n, p in model.vision.named_parameters() if "patch_embedding" in n]
    assert patch and all(nonzero(p) for p in patch)
