"""Features of a frozen vision encoder, kept per image so that each training image is encoded once.

A frozen encoder in eval mode is a fixed function of the pixels, so from the second epoch on its output can be
looked up instead of recomputed. Images are keyed by a hash of their pixel tensor, not by file name, so a
lookup can never return another image's features, and augmented pixels simply miss. Every tensor the encoder
returns is kept (including the extra layers a connector reads), so connectors see the same inputs whether an
image is cached or not. The cache stops growing at ``max_mb``; it is only attached while the encoder has
nothing to train (``Trainer.setup``), and ``VisionTower.forward`` refuses to use it otherwise.
"""
from __future__ import annotations

import hashlib

import torch

from ..connectors.base import VisualFeatures


def pixel_key(pixels: torch.Tensor) -> bytes:
    """Identity of one image's pixel tensor [3, H, W] (shape + dtype + bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(pixels.shape), str(pixels.dtype))).encode())
    h.update(pixels.detach().contiguous().cpu().flatten().view(torch.uint8).numpy().tobytes())   # any dtype
    return h.digest()


class FeatureCache:
    def __init__(self, max_mb: float = 1024.0):
        self.max_bytes = max_mb * 2 ** 20
        self.store: dict[bytes, dict] = {}      # key -> one image's rows of every VisualFeatures tensor
        self.grid: tuple[int, int] | None = None
        self.bytes = self.hits = self.misses = 0

    def clear(self) -> None:
        self.store.clear()
        self.bytes = 0

    def features(self, pixel_values: torch.Tensor, encode) -> VisualFeatures:
        """``encode(pixels) -> VisualFeatures`` runs only on the images not seen before; every tensor it returns
        (features, feature layers, CLS, the extra hidden layers) is kept, so a cached image gives exactly what
        encoding it again would."""
        keys = [pixel_key(p) for p in pixel_values]
        fresh: dict[bytes, dict] = {}
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            with torch.no_grad():
                out = encode(pixel_values[missing])
            self.grid = out.grid
            for row, i in enumerate(missing):
                entry = {"features": out.features[row], "layers": [layer[row] for layer in out.layers],
                         "cls": None if out.cls is None else out.cls[row],
                         "hidden": {j: h[row] for j, h in out.hidden.items()}}
                fresh[keys[i]] = entry
                size = sum(t.numel() * t.element_size() for t in tensors(entry))
                if self.bytes + size <= self.max_bytes:
                    self.store[keys[i]], self.bytes = entry, self.bytes + size
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        rows = [self.store.get(k) or fresh[k] for k in keys]
        first = rows[0]
        return VisualFeatures(features=torch.stack([r["features"] for r in rows]),          # [B, N, D_vis]
                              grid=self.grid,
                              layers=[torch.stack([r["layers"][j] for r in rows]) for j in range(len(first["layers"]))],
                              cls=None if first["cls"] is None else torch.stack([r["cls"] for r in rows]),
                              hidden={j: torch.stack([r["hidden"][j] for r in rows]) for j in first["hidden"]})

    def summary(self) -> str:
        return (f"frozen vision features: {len(self.store)} images cached ({self.bytes / 2 ** 20:.1f} MB), "
                f"{self.hits} lookups, {self.misses} encodings")


def tensors(entry: dict) -> list[torch.Tensor]:
    """Every tensor of one cached image."""
    out = [entry["features"], *entry["layers"], *entry["hidden"].values()]
    return out + ([entry["cls"]] if entry["cls"] is not None else [])
