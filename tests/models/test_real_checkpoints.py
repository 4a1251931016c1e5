"""Real checkpoints done right: the architectures of CLIP-L/336, SigLIP-so400m, Qwen2 and Llama-3 (built tiny from
their real configs, with real tokenizer and processor files on disk, tests/real_checkpoints.py).

- Prompts: with ``chat_template = "tokenizer"`` a conversation is exactly what the LLM's own
  ``apply_chat_template`` renders and tokenizes (Qwen2-Instruct, Llama-3-Instruct, Llama-3.2-Instruct with its date
  line), generation prompts too, while the labels still come from spans (answer + end-of-turn token only).
- Pixels: the encoder's own image processor, checked against an independent Pillow computation on a real photo
  (CLIP-L/336: shorter side to 336 + centre crop; SigLIP-so400m: squashed to 384 x 384, mean/std 0.5), LLaVA-1.5's
  pad-to-square, and the tiny demo's square resize left as it was.
- A saved model preprocesses and formats exactly as before saving, without the original checkpoints.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from real_checkpoints import tiny_llm_dir, tiny_vision_dir
from vlbridge.config import ConnectorConfig, LLMConfig, ModelConfig, VisionConfig
from vlbridge.data.hf_preprocess import ProcessorTransform
from vlbridge.data.image_transform import ImageTransform
from vlbridge.data.records import Turn
from vlbridge.data.template import IGNORE_INDEX
from vlbridge.models.build import build_model
from vlbridge.models.vlm import VLBridgeModel
from vlbridge.presets import get_preset

CLIP, SIGLIP = "clip-vit-large-patch14-336", "siglip-so400m-patch14-384"
QWEN2, LLAMA3, LLAMA32 = "Qwen2-0.5B-Instruct", "Meta-Llama-3-8B-Instruct", "Llama-3.2-1B-Instruct"
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

CONVERSATION = [Turn("system", "Answer briefly."), Turn("user", "<image>\nWhat color is the cat?"),
                Turn("assistant", "Orange."), Turn("user", "Where is it looking?"), Turn("assistant", "Up.")]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    dirs = {name: tiny_vision_dir(name, root / name) for name in (CLIP, SIGLIP)}
    dirs.update({name: tiny_llm_dir(name, root / name) for name in (QWEN2, LLAMA3, LLAMA32)})
    return dirs


def model_of(checkpoints, vision: str, llm: str, pad_to_square: bool = False) -> VLBridgeModel:
    cfg = ModelConfig(VisionConfig(name_or_path=str(checkpoints[vision]), feature_layers=[-2],
                                   pad_to_square=pad_to_square),
                      ConnectorConfig("mlp"),
                      LLMConfig(name_or_path=str(checkpoints[llm]), chat_template="tokenizer", max_length=2048))
    torch.manual_seed(0)
    return build_model(cfg)


def messages(turns) -> list[dict]:
    return [{"role": t.role, "content": t.text} for t in turns]


def hf_ids(tok, turns, generation: bool = False) -> list[int]:
    return list(tok.apply_chat_template(messages(turns), tokenize=True, add_generation_prompt=generation)["input_ids"])


def today() -> str:
    return time.strftime("%d %b %Y")


EXPECTED = {
    QWEN2: ("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n<image>\nWhat color is the cat?"
            "<|im_end|>\n<|im_start|>assistant\nOrange.<|im_end|>\n<|im_start|>user\nWhere is it looking?<|im_end|>\n"
            "<|im_start|>assistant\nUp.<|im_end|>\n"),
    LLAMA3: ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAnswer briefly.<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat color is the cat?<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\nOrange.<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\nWhere is it looking?<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\nUp.<|eot_id|>"),
    LLAMA32: ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
              "Today Date: {date}\n\nAnswer briefly.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat color is the cat?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nOrange.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nWhere is it looking?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nUp.<|eot_id|>"),
}
END_OF_TURN = {QWEN2: "<|im_end|>", LLAMA3: "<|eot_id|>", LLAMA32: "<|eot_id|>"}


@pytest.mark.parametrize("llm", [QWEN2, LLAMA3, LLAMA32])
def test_prompts_are_the_llms_own_chat_template_with_labels_from_spans(checkpoints, llm):
    model = model_of(checkpoints, CLIP, llm)
    tok = model.tokenizer
    ids, labels = model.builder.build(CONVERSATION)
    text = tok.decode(ids)
    assert text == tok.apply_chat_template(messages(CONVERSATION), tokenize=False)
    assert text == EXPECTED[llm].format(date=today())
    assert ids == hf_ids(tok, CONVERSATION)                     # <image> is one token, where the user put it
    assert ids.count(model.image_token_id) == 1

    supervised = [i for i, l in zip(ids, labels) if l != IGNORE_INDEX]
    assert tok.decode(supervised) == f"Orange.{END_OF_TURN[llm]}Up.{END_OF_TURN[llm]}"

    prompt, _ = model.builder.build(CONVERSATION[:-1], for_generation=True)
    assert prompt == hf_ids(tok, CONVERSATION[:-1], generation=True)
    assert tok.convert_tokens_to_ids(END_OF_TURN[llm]) in model.builder.stop_token_ids()

    no_system = CONVERSATION[1:3]                                # the template's default system turn, if any
    assert model.builder.build(no_system)[0] == hf_ids(tok, no_system)


def test_messages_are_trimmed_where_the_template_trims(checkpoints):
    turns = [Turn("user", "  What color?  "), Turn("assistant", " Orange. ")]
    for llm in (QWEN2, LLAMA3):
        model = model_of(checkpoints, CLIP, llm)
        assert model.builder.build(turns)[0] == hf_ids(model.tokenizer, turns)


def photo() -> Image.Image:
    return Image.fromarray(skdata.chelsea())                       # 451 x 300, RGB


def normalised(image: Image.Image, mean, std) -> torch.Tensor:
    x = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(((x - np.array(mean)) / np.array(std)).astype(np.float32)).permute(2, 0, 1)


def test_clip_l336_pixels_are_its_processors_shorter_side_resize_and_centre_crop(checkpoints):
    model = model_of(checkpoints, CLIP, QWEN2)
    transform = model.vision.image_transform()
    assert isinstance(transform, ProcessorTransform) and transform.size == 336 and model.vision.grid == (24, 24)
    image = photo()
    width = round(image.width * 336 / image.height)                # 505: shorter side to 336, aspect kept
    left = (width - 336) // 2
    expected = normalised(image.resize((width, 336), Image.BICUBIC).crop((left, 0, left + 336, 336)),
                          CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(transform(image), expected, rtol=0, atol=1e-5)


def test_siglip_so400m_pixels_are_squashed_to_384_with_half_mean_and_std(checkpoints):
    model = model_of(checkpoints, SIGLIP, LLAMA32)
    transform = model.vision.image_transform()
    assert transform.size == 384 and model.vision.grid == (27, 27)
    expected = normalised(photo().resize((384, 384), Image.BICUBIC), [0.5] * 3, [0.5] * 3)
    torch.testing.assert_close(transform(photo()), expected, rtol=0, atol=1e-5)


def test_llava_pad_to_square_keeps_the_whole_image_on_a_mean_coloured_square(checkpoints):
    model = model_of(checkpoints, CLIP, QWEN2, pad_to_square=True)
    image = photo()
    fill = tuple(int(m * 255) for m in CLIP_MEAN)                 # (122, 116, 104)
    square = Image.new("RGB", (451, 451), fill)
    square.paste(image, (0, (451 - 300) // 2))
    expected = normalised(square.resize((336, 336), Image.BICUBIC), CLIP_MEAN, CLIP_STD)   # nothing cropped
    pixels = model.vision.image_transform()(image)
    torch.testing.assert_close(pixels, expected, rtol=0, atol=1e-5)
    top = torch.tensor([(f / 255 - m) / s for f, m, s in zip(fill, CLIP_MEAN, CLIP_STD)])
    torch.testing.assert_close(pixels[:, :5, :].mean((1, 2)), top, rtol=0, atol=1e-4)       # the padding


def test_the_tiny_demo_keeps_its_square_resize(tmp_path):
    cfg = get_preset("tiny-cpu")
    assert cfg.model.llm.chat_template == "plain" and cfg.model.vision.preprocess == "auto"
    from vlbridge.models.vision import VisionTower
    tower = VisionTower(cfg.model.vision)                         # built from arch: no processor
    assert isinstance(tower.image_transform(), ImageTransform) and tower.processor_config == {}
    # a pretrain-vision output names no processor class: still the resize, with its own mean/std
    tower.model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3],
                                                                   "image_std": [0.4, 0.5, 0.6], "size": 64}))
    saved = VisionTower(VisionConfig(name_or_path=str(tmp_path)))
    transform = saved.image_transform()
    assert isinstance(transform, ImageTransform) and transform.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_a_saved_model_formats_and_preprocesses_as_before(checkpoints, tmp_path):
    model = model_of(checkpoints, SIGLIP, LLAMA32, pad_to_square=True)
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["vision"]["preprocess"] == "processor" and meta["vision"]["pad_to_square"]
    assert meta["vision"]["processor_config"]["size"] == {"height": 384, "width": 384}
    assert meta["llm"]["chat_template"] == "tokenizer"
    loaded = VLBridgeModel.from_pretrained(tmp_path / "m")
    assert loaded.template == model.template
    assert loaded.builder.build(CONVERSATION) == model.builder.build(CONVERSATION)
    torch.testing.assert_close(loaded.vision.image_transform()(photo()), model.vision.image_transform()(photo()),
                               rtol=0, atol=0)


def test_llava_geometry_trains_a_step(checkpoints):
    """CLIP-L/336's 24 x 24 patches of its penultimate layer -> MLP -> Qwen2: loss and gradients on a real photo."""
    model = model_of(checkpoints, CLIP, QWEN2, pad_to_square=True).train()
    from vlbridge.data.dataset import Batch
    ids, labels = model.builder.build(CONVERSATION)
    batch = Batch([torch.tensor(ids)], [torch.tensor(labels)], model.vision.image_transform()(photo())[None], [1])
    out = model(batch)
    out.loss.backward()
    assert model.visual_tokens_per_image() == 576 and out.n_positions == len(ids) - 1 + 576
    assert torch.isfinite(out.loss) and model.connector.net[0].weight.grad.abs().sum() > 0
