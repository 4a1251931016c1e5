"""A tiny end-to-end Emu run through the CLI: ShapesWorld documents -> vision pretraining -> the instruct stage on
documents whose images repeat (the regression loss falls), the generate stage (connector frozen) and the decoder
stage (both declared by the connector)
-> eval (QA and few-shot records with up to five images) -> measure -> generate-image in context."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vlbridge.cli.main import main
from vlbridge.models.vlm import VLBridgeModel

pytestmark = pytest.mark.slow          # end to end: several trainings

TINY_VIT = json.dumps(dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8))
OPTIONS = json.dumps({"num_queries": 4, "layers": 1, "hidden": 32, "heads": 2, "decoder_width": 16,
                      "decoder_layers": 1, "decoder_heads": 2, "decoder_channels": [8, 8, 8]})


def test_emu_pipeline_from_the_cli(tmp_path, capsys):
    data, vision, run = tmp_path / "docs", tmp_path / "vision", tmp_path / "run"
    assert main(["data", "shapes-docs", "--out", str(data), "--n", "24", "--test_n", "2", "--scenes.image_size", "32",
                 "--scenes.object_size", "0.28,0.32,0.36,0.4", "--scenes.max_objects", "2"]) == 0
    assert main(["pretrain-vision", "--annotations", str(data / "scenes.json"), "--out", str(vision), "--steps", "2",
                 "--batch_size", "4", "--model.vision.arch", TINY_VIT, "--model.vision.image_size", "32"]) == 0
    stories = [r for r in json.loads((data / "train.json").read_text()) if r["task"] == "story"]
    repeated = [{**stories[0], "id": f"again_{i}"} for i in range(8)]            # the same 3+ images, repeated
    assert len(repeated[0]["images"]) >= 3
    (data / "repeat.json").write_text(json.dumps(repeated))

    assert main(["train", "--preset", "tiny-cpu-emu", "--model.vision.name_or_path", str(vision), "--model.vision.image_size", "32",
                 "--train.train_vision", "false", "--model.connector.options", OPTIONS, "--data", str(data),
                 "--data.train_file", "repeat.json", "--steps", "12", "--batch-size", "4", "--lr", "3e-3",
                 "--train.warmup_steps", "1", "--train.eval_every", "0", "--train.save_every", "0",
                 "--train.log_every", "1", "--train.stages", "instruct,generate,decoder",
                 "--train.stage_schedules", '{"generate": {"steps": 2}, "decoder": {"steps": 3, "renderer_steps": 3, "batch_size": 4}}',
                 "--out", str(run)]) == 0
    log = [json.loads(line) for line in (run / "instruct" / "log.jsonl").read_text().splitlines()]
    regression = [entry["regression"] for entry in log if "regression" in entry]
    assert len(regression) == 12 and regression[-1] < regression[0]          # it fits the repeated images
    assert all(entry["target_var"] > 0 for entry in log if "target_var" in entry)
    read, wrote = (VLBridgeModel.from_pretrained(run / s / "final").state_dict() for s in ("instruct", "generate"))
    assert all(torch.equal(read[k], wrote[k]) for k in read if k.startswith("connector.former"))   # frozen there
    assert not all(torch.equal(read[k], wrote[k]) for k in read if k.startswith(("llm.", "connector.regression")))
    model_dir = run / "decoder" / "final"
    metrics = json.loads((model_dir / "decoder_metrics.json").read_text())
    assert metrics["val"]["images"] > 0 and (model_dir / "renderer.safetensors").is_file()
    assert 0 <= metrics["val"]["decoder_on_embeddings"]["checker"]["objects_exact"] <= 1
    assert main(["emu", "decoder", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "again"),
                 "--steps", "2", "--renderer-from", str(model_dir), "--val-images", "2"]) == 0      # a renderer reused
    again = json.loads((tmp_path / "again" / "decoder_metrics.json").read_text())
    assert "renderer_from" in again and "renderer_seconds_per_step" not in again
    assert VLBridgeModel.from_pretrained(model_dir).cfg.connector.name == "emu"

    assert main(["eval", "--model", str(model_dir), "--data", str(data / "test.json"), "--out",
                 str(tmp_path / "eval")]) == 0
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert {"caption", "color", "shape", "fewshot_k0", "fewshot_k4"} <= set(scores)
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert any(p["task"] == "fewshot_k4" and p["prompt"].count("<image>") == 5 for p in predictions)

    assert main(["emu", "measure", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "measure"),
                 "--n", "2", "--grid", "2"]) == 0
    figures = json.loads((tmp_path / "measure" / "metrics.json").read_text())
    assert figures["t2i_real_renders"]["objects_exact"] == 1.0 and figures["next_frame_real"]["frame_ok"] == 1.0
    assert figures["trilemma"]["discrete"] is False and figures["trilemma"]["tokens_per_image"] == 4
    assert Image.open(tmp_path / "measure" / "samples.png").size[0] > 0

    item = json.loads((data / "generation.json").read_text())["next_frame"][0]
    out = tmp_path / "next.png"
    capsys.readouterr()
    assert main(["generate-image", "--model", str(model_dir), "--prompt", item["text"], "--out", str(out), "--size", "64",
                 *[a for im in item["images"] for a in ("--image", str(data / im))]]) == 0
    assert Image.open(out).size == (64, 64) and "regressed embeddings" in capsys.readouterr().out
