"""Emu generation in context: regressed embeddings with the KV cache equal full recomputation (text-only and
image+text prompts, guided or not), a left-padded batch equals single prompts, guidance identities, the prompt
layout, and `vlbridge generate-image` writing a PNG of the requested size."""
from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from support import emu_config, redraw
from vlbridge.cli.main import main
from vlbridge.recipes.emu.image_generation import (EmuGenConfig, document_text, generate_embeddings,
                                                   generate_images)
from vlbridge.models.vlm import VLBridgeModel


@pytest.fixture(scope="module")
def model(tiny_model):
    """A tiny Emu model with its LLM, connector and head redrawn large, so the embeddings depend on the context."""
    torch.manual_seed(0)
    return redraw(VLBridgeModel(emu_config(), copy.deepcopy(tiny_model.tokenizer)))


@pytest.fixture(scope="module")
def pictures():
    g = torch.Generator().manual_seed(3)
    return [Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).byte().numpy(), "RGB") for _ in range(3)]


def test_prompt_layout():
    assert document_text("a red circle", 0) == "a red circle\n"
    assert document_text("", 0) == ""
    assert document_text("a red circle", 2) == "<image>\n<image>\na red circle\n"
    assert document_text("<image>\nx\n<image>\ny", 2) == "<image>\nx\n<image>\ny\n"
    with pytest.raises(ValueError, match="placeholders"):
        document_text("<image> <image>", 1)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_cached_equals_uncached(model, pictures, scale):
    prompts = ["a red circle", "<image>\na blue square\n<image>\na blue square", "a small green triangle above"]
    images = [[], pictures[:2], [pictures[2]]]
    cached = generate_embeddings(model, prompts, images, EmuGenConfig(cfg_scale=scale))
    full = generate_embeddings(model, prompts, images, EmuGenConfig(cfg_scale=scale, use_cache=False))
    assert cached.shape == (3, model.connector.num_tokens(), model.llm_dim)
    assert torch.allclose(cached, full, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(cached[0], cached[1], atol=1e-3)                 # the prompt matters


def test_a_batch_equals_each_prompt_alone(model, pictures):
    prompts, images = ["a red circle", "<image>\na blue square"], [[], [pictures[0]]]
    batch = generate_embeddings(model, prompts, images)
    for i in range(2):
        alone = generate_embeddings(model, prompts[i:i + 1], images[i:i + 1])
        assert torch.allclose(batch[i], alone[0], atol=1e-4, rtol=1e-4)


def test_guidance_identities(model):
    uncond = generate_embeddings(model, [""])
    assert torch.allclose(generate_embeddings(model, [""], gen=EmuGenConfig(cfg_scale=4.0)), uncond, atol=1e-5)
    scale0 = generate_embeddings(model, ["a red circle"], gen=EmuGenConfig(cfg_scale=0.0))   # the empty prompt's,
    assert torch.allclose(scale0, uncond, atol=1e-4, rtol=1e-4)                             # read left-padded


def test_generate_images_paints_each_prompt(model, pictures):
    out = generate_images(model, ["a red circle", "x"], [[], [pictures[0]]], size=40)
    assert [im.size for im in out] == [(40, 40), (40, 40)] and all(im.mode == "RGB" for im in out)


def test_generate_image_cli_writes_a_png_of_the_requested_size(model, pictures, tmp_path, capsys):
    model.save_pretrained(tmp_path / "emu")
    frame = tmp_path / "frame.png"
    pictures[0].save(frame)
    out = tmp_path / "text.png"
    assert main(["generate-image", "--model", str(tmp_path / "emu"), "--prompt", "a red circle", "--out", str(out),
                 "--size", "48", "--check"]) == 0
    assert Image.open(out).size == (48, 48)
    out = tmp_path / "context.png"
    assert main(["generate-image", "--model", str(tmp_path / "emu"), "--prompt", "a red circle", "--image", str(frame),
                 "--image", str(frame), "--out", str(out), "--size", "40", "--cfg-scale", "2"]) == 0
    assert Image.open(out).size == (40, 40)
    assert "regressed embeddings" in capsys.readouterr().out
    assert main(["generate-image", "--model", str(tmp_path / "emu"), "--prompt", "<image> <image> <image>",
                 "--image", str(frame), "--out", str(out)]) == 2
    assert "placeholders" in capsys.readouterr().err
