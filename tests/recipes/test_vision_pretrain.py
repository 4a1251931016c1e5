"""The vision stage: per-patch labels from boxes, and a pretrained encoder that loads by path."""
from __future__ import annotations

import json

import pytest
import torch

from support import tiny_model_config
from vlbridge.recipes.vision_pretrain import VisionPretrainConfig, patch_labels, pretrain_vision


def test_patch_labels_follow_box_centres():
    vocab = {"<background>": 0, "circle": 1, "square": 2}
    objects = [{"box": [0.0, 0.0, 0.5, 0.5], "shape": "circle"},       # top-left quarter
               {"box": [0.2, 0.2, 0.3, 0.3], "shape": "square"}]      # a small box inside it wins
    labels = patch_labels(objects, (4, 4), "shape", vocab).view(4, 4)
    # patch centres are at 0.125, 0.375, 0.625, 0.875
    assert labels[:2, :2].tolist() == [[1, 1], [1, 1]]
    assert labels[2:].sum() == 0 and labels[:, 2:].sum() == 0
    small = patch_labels([{"box": [0.3, 0.3, 0.45, 0.45], "shape": "square"}], (4, 4), "shape", vocab).view(4, 4)
    assert small[1, 1] == 2 and small.sum() == 2                     # only the patch whose centre is inside


def test_pretrained_encoder_loads_by_path(shapes_dir, tmp_path):
    cfg = VisionPretrainConfig(annotations=str(shapes_dir / "scenes.json"), out=str(tmp_path / "vision"), steps=3,
                               batch_size=4, vision=tiny_model_config().vision)
    out = pretrain_vision(cfg)
    meta = json.loads((out / "vision_pretrain.json").read_text())
    assert set(meta["held_out_patch_accuracy"]) == {"shape", "color"}
    assert meta["vocabularies"]["shape"]["<background>"] == 0
    from vlbridge.models.build import build_model
    model_cfg = tiny_model_config()
    model_cfg.vision.name_or_path = str(out)
    model = build_model(model_cfg, ["red", "circle"])
    from transformers import AutoModel
    ref = AutoModel.from_pretrained(out)
    a, b = model.vision.model.state_dict(), ref.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert model.vision.image_size == 32


def test_missing_attribute_is_a_clear_error(tmp_path):
    ann = tmp_path / "scenes.json"
    ann.write_text(json.dumps([{"image": "x.png", "objects": [{"box": [0, 0, 1, 1], "shape": "circle"}]}]))
    cfg = VisionPretrainConfig(annotations=str(ann), out=str(tmp_path / "o"), vision=tiny_model_config().vision)
    with pytest.raises(ValueError, match="lacks \\['color'\\]"):
        pretrain_vision(cfg)


def test_joint_attribute_labels_the_combination(shapes_dir, tmp_path):
    vocab = {"<background>": 0, "red+circle": 1, "blue+circle": 2}
    objects = [{"box": [0.0, 0.0, 0.5, 0.5], "shape": "circle", "color": "blue"}]
    labels = patch_labels(objects, (2, 2), "color+shape", vocab)
    assert labels.tolist() == [2, 0, 0, 0]
    cfg = VisionPretrainConfig(annotations=str(shapes_dir / "scenes.json"), out=str(tmp_path / "vision"), steps=2,
                               batch_size=4, attributes=["shape", "color+shape"], vision=tiny_model_config().vision)
    meta = json.loads((pretrain_vision(cfg) / "vision_pretrain.json").read_text())
    joint = meta["vocabularies"]["color+shape"]
    scenes = json.loads((shapes_dir / "scenes.json").read_text())
    assert set(joint) - {"<background>"} == {f"{o['color']}+{o['shape']}" for s in scenes for o in s["objects"]}
    bad = VisionPretrainConfig(annotations=str(shapes_dir / "scenes.json"), out=str(tmp_path / "v2"),
                               attributes=["color+size_px"], vision=tiny_model_config().vision)
    with pytest.raises(ValueError, match="lacks \\['size_px'\\]"):
        pretrain_vision(bad)


def test_box_attributes_label_each_patch_with_its_objects_box_bin():
    from vlbridge.recipes.vision_pretrain import attribute_value
    obj = {"box": [0.20, 0.0, 0.55, 1.0], "shape": "square"}
    assert [attribute_value(obj, a, 4) for a in ("x1", "y1", "x2", "y2", "cx")] == ["0", "0", "2", "3", "1"]
    assert attribute_value(obj, "x1+shape", 16) == "3+square"
    vocab = {"<background>": 0, "1": 1, "2": 2}
    labels = patch_labels([obj], (2, 2), "x2", vocab, box_bins=4).view(2, 2)     # x2 = 0.55 -> bin 2 of 4
    assert labels.tolist() == [[2, 0], [2, 0]]                  # patch centres at 0.25 (in the box) and 0.75


def test_the_same_seed_writes_the_same_encoder_on_two_threads(shapes_dir, tmp_path):
    """Two runs with the same seed on two threads write identical weights, and oneDNN is back on afterwards.
    (The demo-size run, where oneDNN's multi-threaded convolution backward pass did vary, is checked by running
    `make demo` twice: docs/results/demo.md.)"""
    from safetensors.torch import load_file
    from vlbridge.config import VisionConfig
    resnet = VisionConfig(arch={"model_type": "resnet", "num_channels": 3, "embedding_size": 16,
                                "hidden_sizes": [32, 64], "depths": [1, 1], "layer_type": "basic",
                                "downsample_in_first_stage": False}, image_size=64)
    threads, was = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(2)
    try:
        weights = [load_file(str(pretrain_vision(VisionPretrainConfig(
            annotations=str(shapes_dir / "scenes.json"), out=str(tmp_path / f"v{run}"), steps=12, batch_size=16,
            vision=resnet)) / "model.safetensors")) for run in range(2)]
    finally:
        torch.set_num_threads(threads)
    assert torch.backends.mkldnn.enabled == was
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
