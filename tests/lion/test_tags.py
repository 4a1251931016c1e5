"""Soft-prompted tags (vlbridge.lion.tags, the tagger and tagged data):

- the tag sentence goes after the image placeholder, before the question, in the three modes;
- noise replaces each tag with one the image does not have, at the asked rate, deterministically;
- in a LION stage with the LLM frozen, ``<soft>``'s embedding row is the only row that changes;
- the tagger trains on a frozen encoder, reports per-tag precision/recall, and tags a dataset's records.
"""
from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from support import tiny_model_config
from vlbridge.lion.tags import SOFT_TOKEN, TagsConfig, noisy_tags, tag_sentence, with_tags
from vlbridge.lion.tagger import scene_tags, shapes_vocabulary

QF = {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "num_queries": 2}


def test_the_tag_sentence_in_each_mode():
    q = "<image>\nWhat color is the circle?"
    assert with_tags(q, ["red", "circle"], "none") == q
    soft = with_tags(q, ["red", "circle"], "soft")
    assert soft == ("<image>\nAccording to <soft>, you are allowed to use or partially use the following tags: "
                    "[red, circle]. What color is the circle?")
    hard = with_tags(q, ["red", "circle"], "hard")
    assert SOFT_TOKEN not in hard and hard.replace("the image tagger", SOFT_TOKEN) == soft
    assert with_tags("What is it?", ["blue"], "soft").startswith("According to <soft>")
    assert tag_sentence([], "soft").endswith("tags: []. ")
    with pytest.raises(ValueError, match="mode"):
        TagsConfig(mode="loud")
    with pytest.raises(ValueError, match="noise"):
        TagsConfig(noise=1.5)


def test_noise_replaces_tags_with_wrong_ones_at_the_rate():
    vocab = shapes_vocabulary()
    truth = {"red", "circle", "small"}
    tags = sorted(truth)
    assert noisy_tags(tags, truth, vocab, 0.0, random.Random(0)) == tags
    all_wrong = noisy_tags(tags, truth, vocab, 1.0, random.Random(0))
    assert len(all_wrong) == 3 and not set(all_wrong) & truth and len(set(all_wrong)) == 3
    rng = random.Random(1)
    replaced = sum(a != b for _ in range(400) for a, b in zip(tags, noisy_tags(tags, truth, vocab, 0.2, rng)))
    assert 0.15 < replaced / 1200 < 0.25
    assert noisy_tags(tags, truth, vocab, 0.5, random.Random(7)) == noisy_tags(tags, truth, vocab, 0.5, random.Random(7))


def test_scene_tags():
    scene = {"objects": [{"color": "red", "shape": "circle", "size": "small", "glyph": None},
                         {"color": "blue", "shape": "square", "size": "large", "glyph": "7"}]}
    assert scene_tags(scene) == {"red", "circle", "small", "blue", "square", "large", "glyph"}
    assert set(scene_tags(scene)) <= set(shapes_vocabulary())


def test_only_the_soft_row_changes_in_a_lion_stage(tiny_model, shapes_dir):
    from vlbridge.connectors.lion import LionConnector
    from vlbridge.data.dataset import InstructionDataset, collate
    from vlbridge.data.records import SkipReport, load_records
    from vlbridge.models.vlm import VLBridgeModel
    from vlbridge.train.stages import apply_stage, make_optimizer
    from vlbridge.config import TrainConfig
    torch.manual_seed(0)
    model = VLBridgeModel(tiny_model_config("lion", {"qformer": QF, "aggregator_heads": 2, "adapter_bottleneck": 4}),
                          copy.deepcopy(tiny_model.tokenizer)).train()
    soft = model.tokenizer.convert_tokens_to_ids(SOFT_TOKEN)
    records = load_records(shapes_dir / "train.json")[:4]
    for rec in records:
        rec.turns[0].text = with_tags(rec.turns[0].text, ["red", "circle"], "soft")
    stage = LionConnector.stages(model.connector.options)["mixed"]
    assert "embeddings:added" in stage.trains and "llm" not in stage.trains
    apply_stage(model, stage)
    opt = make_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.1, stage="mixed"))
    ds = InstructionDataset(records, model.builder, model.vision.image_transform(), 512,
                            model.visual_tokens_per_image(), SkipReport(), on_error="raise")
    batch = collate([ds[i] for i in range(len(ds))])
    assert any(soft in ids.tolist() for ids in batch.input_ids)
    before = model.llm.get_input_embeddings().weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        model(batch).loss.backward()
        opt.step()
    after = model.llm.get_input_embeddings().weight.detach()
    changed = (after != before).any(1).nonzero().flatten().tolist()
    assert changed == [soft]


def test_tagger_trains_reports_and_tags_a_dataset(shapes_dir, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from vlbridge.recipes.lion.tag_data import tag_dataset
    from vlbridge.recipes.lion.tagger_stage import TaggerConfig, metrics_table, train_tagger
    torch.manual_seed(0)
    vision = tmp_path / "vision"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=32, patch_size=8)).save_pretrained(vision)
    out = train_tagger(TaggerConfig(data=str(shapes_dir), vision=str(vision), out=str(tmp_path / "tagger"), steps=20,
                                    batch_size=8))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["val"]["per_tag"]) == set(shapes_vocabulary())
    assert all(set(m) == {"precision", "recall", "support"} for m in metrics["val"]["per_tag"].values())
    assert "| red |" in metrics_table(metrics["val"])
    assert (out / "vision" / "config.json").is_file()

    # threshold 0: every vocabulary tag is predicted (so none is left to swap in as noise)
    stats = tag_dataset(shapes_dir, tmp_path / "tagged", out, TagsConfig(mode="soft", noise=0.5, threshold=0.0),
                        files=("test.json",))
    n = stats["test.json"]["records"]
    assert stats["test.json"]["tagged"] == n > 0 and stats["test.json"]["tags"] == n * len(shapes_vocabulary())
    assert stats["test.json"]["replaced"] == 0
    tagged = json.loads((tmp_path / "tagged" / "test.json").read_text())
    original = json.loads((shapes_dir / "test.json").read_text())
    for new, old in zip(tagged, original):
        q_new, q_old = new["conversations"][0]["value"], old["conversations"][0]["value"]
        assert q_new.startswith("<image>\nAccording to <soft>, you are allowed") and q_new.endswith(
            q_old.replace("<image>\n", "", 1))
        assert new["conversations"][1:] == old["conversations"][1:] and new["image"] == old["image"]
    with pytest.raises(FileNotFoundError, match="not a tagger directory"):
        tag_dataset(shapes_dir, tmp_path / "x", tmp_path, TagsConfig())
