"""A real photo (scikit-image sample data, offline) goes through loading, resizing and generation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlbridge.data.images import load_image
from vlbridge.generate import GenerationConfig
from vlbridge.inference import Predictor

skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the sample photos")


def test_real_photo_through_the_model(tiny_model, tmp_path):
    path = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(path)                    # 512x512 RGB photo
    image, note = load_image(path)
    assert note is None and image.size == (512, 512)
    pixels = tiny_model.vision.image_transform()(image)
    assert pixels.shape == (3, 32, 32) and torch.isfinite(pixels).all()
    # the resized photo keeps the photo's content: its mean colour matches a direct downscale
    direct = np.asarray(image.resize((32, 32), Image.BICUBIC), dtype=np.float32).mean((0, 1)) / 255
    mean = torch.tensor(tiny_model.vision.image_mean)[:, None, None]
    std = torch.tensor(tiny_model.vision.image_std)[:, None, None]
    assert np.allclose((pixels * std + mean).mean((1, 2)).numpy(), direct, atol=1e-3)
    answer = Predictor(tiny_model, GenerationConfig(max_new_tokens=5)).ask("What color is the circle?", [image])
    assert isinstance(answer, str)


def test_grey_photo_is_converted_and_noted(tmp_path):
    path = tmp_path / "camera.png"
    Image.fromarray(skdata.camera()).save(path)                       # 8-bit greyscale photo
    image, note = load_image(path)
    assert image.mode == "RGB" and note and "RGB" in note
    r, g, b = (np.asarray(image)[..., i] for i in range(3))
    assert (r == g).all() and (g == b).all() and (r == skdata.camera()).all()
