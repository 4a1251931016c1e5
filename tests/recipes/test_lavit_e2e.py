"""A tiny end-to-end LaVIT run through the CLI: vision pretraining -> tokenizer stage -> prepare -> unified
training -> eval (understanding) -> measure -> generate-image. Seconds of training; checks that every step
runs, writes what it promises, and that the trained pieces reload."""
from __future__ import annotations

import pytest

import json
import shutil

from PIL import Image

from vlbridge.cli.main import main
from vlbridge.lavit.visual_tokenizer import DynamicVisualTokenizer
from vlbridge.lavit.vocabulary import IMG_OPEN, VisualVocab
from vlbridge.models.vlm import VLBridgeModel

pytestmark = pytest.mark.slow          # end to end: subprocesses, several trainings

TINY_VIT = json.dumps(dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8))
TOKENIZER_OPTIONS = ["--options.codebook_size", "16", "--options.heads", "2", "--options.merger_layers", "1",
                     "--options.decoder_layers", "1", "--options.width", "32", "--options.pixel_channels", "8,8,8"]


def test_lavit_pipeline_from_the_cli(shapes_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(shapes_dir, data)
    vision, tok_dir, init, run = tmp_path / "vision", tmp_path / "tok", tmp_path / "init", tmp_path / "run"
    assert main(["pretrain-vision", "--annotations", str(data / "scenes.json"), "--out", str(vision), "--steps", "2",
                 "--batch_size", "4", "--model.vision.arch", TINY_VIT, "--model.vision.image_size", "32"]) == 0
    assert main(["lavit", "tokenizer", "--annotations", str(data / "scenes.json"), "--vision", str(vision),
                 "--out", str(tok_dir), "--steps_continuous", "3", "--steps_quantized", "3", "--steps_pixels", "2",
                 "--batch_size", "4", "--ratio_warmup", "2", "--kmeans_images", "8", *TOKENIZER_OPTIONS]) == 0
    metrics = json.loads((tok_dir / "metrics.json").read_text())
    assert metrics["split"] == "val" and 1 <= metrics["kept_mean"] <= 16
    assert metrics["codebook"]["size"] == 16 and -1 <= metrics["cosine_quantized"] <= 1
    assert set(metrics["object_attribute_probe"]) == {"color", "shape"}
    DynamicVisualTokenizer.load(tok_dir)

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
