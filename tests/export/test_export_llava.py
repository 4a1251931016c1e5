"""`vlbridge export --format hf-llava`: the export loads with transformers' Auto classes, its processor gives
vlbridge's pixels and prompt ids, and greedy answers equal vlbridge's on the same images and questions
(tiny CLIP + Llama from configs; mlp, and linear with merged LoRA); other connectors are refused with a reason."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from serve_support import redraw
from skimage import data as skdata

from vlbridge.cli.main import main
from vlbridge.data.images import load_image
from vlbridge.data.records import Turn, load_records
from vlbridge.generate import GenerationConfig, generate
from vlbridge.inference import Predictor, Query
from vlbridge.models.build import build_model

from support import tiny_model_config

pytestmark = pytest.mark.slow
MAX_NEW = 12


def cut(ids: list[int], stops: list[int]) -> list[int]:
    return next((ids[:i] for i, t in enumerate(ids) if t in stops), ids)


def conversations(shapes_dir):
    images = [load_image(r.images[0])[0] for r in load_records(shapes_dir / "train.json")[:3]]
    photo = Image.fromarray(skdata.astronaut()).crop((40, 10, 300, 210))          # not square: resized
    return [
        ([Turn("user", "<image>\nWhat color is the circle?")], [images[0]]),
        ([Turn("user", "<image>\nHow many objects are there?")], [images[1]]),
        ([Turn("user", "<image>\nWhat is in the picture?")], [photo]),
        ([Turn("system", "Answer briefly."), Turn("user", "<image>\nWhat shape is it?"), Turn("assistant", "a circle"),
          Turn("user", "And its color?")], [images[2]]),
    ]


def as_messages(turns: list[Turn]) -> list[dict]:
    out = []
    for t in turns:
        if t.text.startswith("<image>\n"):
            out.append({"role": t.role, "content": [{"type": "image"}, {"type": "text", "text": t.text[8:]}]})
        else:
            out.append({"role": t.role, "content": t.text})
    return out


def check_round_trip(model, out_dir, shapes_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    assert main(["export", "--model", str(out_dir / "vlbridge"), "--format", "hf-llava",
                 "--out", str(out_dir / "hf")]) == 0
    processor = AutoProcessor.from_pretrained(out_dir / "hf")
    hf = AutoModelForImageTextToText.from_pretrained(out_dir / "hf").eval()
    stops = model.builder.stop_token_ids()
    answers = []
    for turns, images in conversations(shapes_dir):
        ids, pixels = Predictor(model).encode(Query(turns, images))
        ours = generate(model, [ids], pixels, GenerationConfig(max_new_tokens=MAX_NEW))[0]
        text = processor.apply_chat_template(as_messages(turns), add_generation_prompt=True, tokenize=False)
        inputs = processor(text=text, images=images, return_tensors="pt", add_special_tokens=False)
        torch.testing.assert_close(inputs["pixel_values"], pixels, atol=1e-5, rtol=0)
        n = model.visual_tokens_per_image()
        expanded = [t for i in ids.tolist() for t in ([i] * n if i == model.image_token_id else [i])]
        assert inputs["input_ids"][0].tolist() == expanded
        with torch.no_grad():
            theirs = hf.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)[0, len(expanded):].tolist()
        assert cut(theirs, stops) == ours
        answers.append(tuple(ours))
    assert len(set(answers)) == len(answers)                   # the images and questions really matter


def test_mlp_model_exports_to_llava_with_the_same_answers(answering_model, shapes_dir, tmp_path):
    answering_model.save_pretrained(tmp_path / "vlbridge")
    check_round_trip(answering_model, tmp_path, shapes_dir)


def test_linear_model_with_lora_exports_merged(untied_tiny_model, shapes_dir, tmp_path):
    from copy import deepcopy
    cfg = deepcopy(untied_tiny_model.cfg)
    cfg.connector.name, cfg.connector.options = "linear", {}
    cfg.llm.arch = untied_tiny_model.llm.config.to_dict()
    torch.manual_seed(1)
    from vlbridge.models.vlm import VLBridgeModel
    model = VLBridgeModel(cfg, deepcopy(untied_tiny_model.tokenizer))
    model = redraw(model)
    model.apply_lora(4, 8, ["q_proj", "v_proj"])
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)                              # a LoRA that changes the answers
    model.eval().save_pretrained(tmp_path / "vlbridge")
    check_round_trip(model, tmp_path, shapes_dir)


@pytest.mark.parametrize("connector, reason", [("qformer", "no LLaVA equivalent"), ("mlp3", "exactly 2 linear")])
def test_other_connectors_are_refused_with_the_reason(shapes_dir, tmp_path, capsys, connector, reason):
    cfg = tiny_model_config("mlp", {"depth": 3}) if connector == "mlp3" else tiny_model_config(connector)
    texts = [t.text for r in load_records(shapes_dir / "train.json") for t in r.turns]
    build_model(cfg, texts).save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(tmp_path / "m"), "--format", "hf-llava", "--out", str(tmp_path / "hf")]) == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
