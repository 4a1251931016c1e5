"""Image preprocessing with Pillow + numpy: RGB PIL image -> normalised tensor [3, S, S] (a square resize, the
tiny demo's), and LLaVA-1.5's pad-to-square that any preprocessing can start with."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """The image centred on a square canvas of its longer side filled with ``fill`` (LLaVA-1.5's 'pad' aspect
    ratio: the encoder then sees the whole image, nothing cropped away, nothing stretched)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def mean_colour(mean: list[float]) -> tuple[int, int, int]:
    """The fill colour of the padding: the normalisation mean in 0..255 (truncated, as LLaVA-1.5 does)."""
    return tuple(int(m * 255) for m in mean)


class ImageTransform:
    def __init__(self, size: int, mean: list[float], std: list[float], pad_to_square: bool = False):
        self.size = size
        self.pad_to_square = pad_to_square
        self.fill = mean_colour(mean)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            raise ValueError(f"ImageTransform expects RGB, got {image.mode} (load images with data.images.load_image)")
        if self.pad_to_square:
            image = expand_to_square(image, self.fill)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0  # [3, S, S]
        return (x - self.mean) / self.std
