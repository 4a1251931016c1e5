"""Image preprocessing with Pillow + numpy: RGB PIL image -> normalised tensor [3, S, S]."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class ImageTransform:
    def __init__(self, size: int, mean: list[float], std: list[float]):
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            raise ValueError(f"ImageTransform expects RGB, got {image.mode} (load images with data.images.load_image)")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0  # [3, S, S]
        return (x - self.mean) / self.std
