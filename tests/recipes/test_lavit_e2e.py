"""A tiny end-to-end LaVIT run through the CLI: vision pretraining -> tokenizer stage -> prepare -> unified
training -> eval (understanding) -> measure -> generate-image. Seconds of training; checks that every step
runs, writes what it promises and reloads, and that the trained tokenizer behaves as one: its reconstruction
from codes beats the mean feature on held-out object patches, and busier scenes keep more tokens."""
from __future__ import annotations

import pytest

import json

import torch
import torch.nn.functional as F
from PIL import Image

from vlbridge.cli.main import main
from vlbridge.config import VisionConfig
from vlbridge.data.shapesworld import ShapesWorldConfig, generate
from vlbridge.lavit.visual_tokenizer import DynamicVisualTokenizer
from vlbridge.lavit.vocabulary import IMG_OPEN, VisualVocab
from vlbridge.models.vision import VisionTower
from vlbridge.models.vlm import VLBridgeModel
from vlbridge.recipes.lavit.tokenizer_stage import encode_split, load_scenes, recon_features
from vlbridge.recipes.vision_pretrain import object_patches

pytestmark = pytest.mark.slow          # end to end: subprocesses, several trainings

# a conv encoder: content, not a position embedding, makes its features (a ViT this small and this briefly
# trained gives nearly one feature per position, which the mean feature already reconstructs)
TINY_RESNET = json.dumps(dict(model_type="resnet", num_channels=3, embedding_size=16, hidden_sizes=[16, 32],
                              depths=[1, 1], layer_type="basic", downsample_in_first_stage=False))
TOKENIZER_OPTIONS = ["--options.codebook_size", "16", "--options.heads", "2", "--options.merger_layers", "1",
                     "--options.decoder_layers", "1", "--options.width", "32", "--options.pixel_channels", "8,8,8"]


def held_out_behaviour(tok: DynamicVisualTokenizer, vision, data) -> dict:
    """On the val split: the cosine to the real features of the reconstruction from codes and of the training
    split's mean feature at each position, on the patches that hold objects; and, on every image, the tokens
    kept per object count."""
    tower = VisionTower(VisionConfig(name_or_path=str(vision)))
    scenes = load_scenes(data / "scenes.json")
    train, val = (encode_split(tower, [s for s in scenes if s["split"] == split], data, "test")
                  for split in ("train", "val"))
    recon, _ = recon_features(tok, val.features)
    mean = train.features.mean(0, keepdim=True).expand_as(val.features)
    on_object = torch.stack([object_patches(s["objects"], tok.grid) for s in val.scenes])        # [n, N]
    everything = encode_split(tower, scenes, data, "test")
    kept = tok.select(everything.features, "argmax").lengths.float()
    return {"recon": float(F.cosine_similarity(recon, val.features, dim=-1)[on_object].mean()),
            "mean_feature": float(F.cosine_similarity(mean, val.features, dim=-1)[on_object].mean()),
            "kept_by_objects": {int(k): float(kept[everything.n_objects == k].mean())
                                for k in everything.n_objects.unique()}}


def test_lavit_pipeline_from_the_cli(tmp_path, capsys):
    data = tmp_path / "data"
    generate(ShapesWorldConfig(n=200, seed=3, image_size=32, object_size=[0.25, 0.3, 0.35, 0.45]), data)
    vision, tok_dir, init, run = tmp_path / "vision", tmp_path / "tok", tmp_path / "init", tmp_path / "run"
    assert main(["pretrain-vision", "--annotations", str(data / "scenes.json"), "--out", str(vision), "--steps", "40",
                 "--batch_size", "8", "--model.vision.arch", TINY_RESNET, "--model.vision.image_size", "32"]) == 0
    assert main(["lavit", "tokenizer", "--annotations", str(data / "scenes.json"), "--vision", str(vision),
                 "--out", str(tok_dir), "--steps_continuous", "300", "--steps_quantized", "100", "--steps_pixels", "2",
                 "--batch_size", "8", "--ratio_warmup", "2", "--kmeans_images", "8", *TOKENIZER_OPTIONS]) == 0
    metrics = json.loads((tok_dir / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["codebook"]["size"] == 16
    assert set(metrics["object_attribute_probe"]) == {"color", "shape"}
    behaviour = held_out_behaviour(DynamicVisualTokenizer.load(tok_dir), vision, data)
    assert behaviour["recon"] > behaviour["mean_feature"] + 0.02          # measured: 0.63 against 0.58
    kept = behaviour["kept_by_objects"]                                    # measured: 2.2, 4.9, 7.3, 8.5
    assert kept[1] < kept[2] < kept[3] < kept[4]

    assert main(["lavit", "prepare", "--tokenizer", str(tok_dir), "--data", str(data), "--out", str(init),
                 "--captions_per_image", "1"]) == 0
    records = json.loads((data / "lavit_train.json").read_text())
    t2i = [r for r in records if r.get("task") == "t2i"]
    understanding = json.loads((data / "train.json").read_text())
    assert len(records) == len(understanding) + len(t2i) and len(t2i) == len(understanding)
    assert all(r["conversations"][1]["value"].startswith(IMG_OPEN) for r in t2i)

    assert main(["train", "--init-from", str(init), "--data", str(data), "--data.train_file", "lavit_train.json",
                 "--train.train_vision", "false", "--steps", "2", "--batch-size", "4", "--out", str(run),
                 "--train.eval_every", "0", "--train.save_every", "0", "--train.warmup_steps", "1"]) == 0
    model = VLBridgeModel.from_pretrained(run / "final")
    assert model.cfg.connector.name == "lavit" and VisualVocab.from_model(model).size == 16

    assert main(["eval", "--model", str(run / "final"), "--data", str(data / "test.json"), "--limit", "1",
                 "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()

    assert main(["lavit", "measure", "--model", str(run / "final"), "--data", str(data), "--out",
                 str(tmp_path / "measure"), "--prompts", "3", "--grid", "2", "--cfg_scales", "1,2"]) == 0
    figures = json.loads((tmp_path / "measure" / "metrics.json").read_text())
    assert figures["checker_real_renders"]["full"] == 1.0                 # the checker reads real renders
    assert {"text_to_image_cfg1", "text_to_image_cfg2", "trilemma", "tokenizer", "checker_other_scenes",
            "unconditional_cfg1"} <= set(figures)
    assert Image.open(tmp_path / "measure" / "samples.png").size[0] > 0

    out = tmp_path / "img.png"
    capsys.readouterr()
    assert main(["generate-image", "--model", str(run / "final"), "--prompt", "a red circle above a small blue square",
                 "--out", str(out), "--check"]) == 0
    assert Image.open(out).size == (256, 256)
    assert "visual tokens" in capsys.readouterr().out


def test_generate_image_rejects_a_non_lavit_model(tiny_model, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "mlp")
    assert main(["generate-image", "--model", str(tmp_path / "mlp"), "--prompt", "a red circle",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "needs a LaVIT model" in capsys.readouterr().err
