"""Image preprocessing by a checkpoint's own Hugging Face image processor (``AutoImageProcessor``).

CLIP-L/336 resizes the shorter side to 336 and centre-crops 336 x 336 with CLIP's mean/std; SigLIP-so400m squashes
to 384 x 384 with mean/std 0.5; each checkpoint's ``preprocessor_config.json`` says which, and this module applies
exactly that (optionally after LLaVA-1.5's pad-to-square). The processor's settings are kept as a dict
(``VisionConfig.processor_config``) so a saved model preprocesses as it was trained, without the original
checkpoint. A ``preprocessor_config.json`` that names no processor class (the tiny demo's encoder writes one with
only its size and mean/std) is not a Hugging Face image processor: such encoders keep the square resize.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoImageProcessor

from ..errors import UserError
from .image_transform import expand_to_square, mean_colour

PROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_KEYS = ("image_processor_type", "feature_extractor_type", "auto_map")


def has_processor(path: str | Path | None) -> bool:
    """Whether ``path`` holds a preprocessor_config.json that names a Hugging Face image processor class."""
    if not path:
        return False
    file = Path(path) / PROCESSOR_FILE
    if not file.is_file():
        return False
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{file}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return isinstance(meta, dict) and any(k in meta for k in PROCESSOR_KEYS)


def processor_config(path: str | Path) -> dict:
    """The full settings of the image processor stored at ``path`` (defaults filled in by its class)."""
    return AutoImageProcessor.from_pretrained(str(path)).to_dict()


def processor_from_config(config: dict):
    """The image processor these settings describe, of the class ``AutoImageProcessor`` picks for them here."""
    with tempfile.TemporaryDirectory(prefix="vlbridge-processor-") as tmp:
        (Path(tmp) / PROCESSOR_FILE).write_text(json.dumps(config))
        return AutoImageProcessor.from_pretrained(tmp)


class ProcessorTransform:
    """RGB PIL image -> pixel tensor [3, H, W] by a Hugging Face image processor; ``size`` is the output side."""

    def __init__(self, config: dict, pad_to_square: bool = False):
        self.config = config
        self.processor = processor_from_config(config)
        self.pad_to_square = pad_to_square
        self.fill = mean_colour(list(self.processor.image_mean))
        probe = self.process(Image.new("RGB", (64, 48)))
        if probe.shape[-1] != probe.shape[-2]:
            raise UserError(f"image processor {config.get('image_processor_type')} gives {tuple(probe.shape[-2:])} "
                            "images; vlbridge's encoders take square inputs")
        self.size = probe.shape[-1]

    def process(self, image: Image.Image) -> torch.Tensor:
        return torch.as_tensor(self.processor(images=image, return_tensors="pt")["pixel_values"][0])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            raise ValueError(f"expects RGB, got {image.mode} (load images with data.images.load_image)")
        if self.pad_to_square:
            image = expand_to_square(image, self.fill)
        return self.process(image).float()                                  # [3, S, S]
