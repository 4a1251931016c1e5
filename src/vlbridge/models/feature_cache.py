"""Features of a frozen vision encoder, kept per image so that each training image is encoded once.

A frozen encoder in eval mode is a fixed function of the pixels, so from the second epoch on its output can be
looked up instead of recomputed (on the tiny CPU preset the encoder is ~4% of a training step). Images are keyed
by a hash of their pixel tensor, not by file name, so a lookup can never return another image's features, and
augmented pixels simply miss. The cache stops growing at ``max_mb``; it is only attached while the encoder has
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
    h.update(pixels.detach().contiguous().cpu().numpy().tobytes())
    return h.digest()


class FeatureCache:
    def __init__(self, max_mb: float = 1024.0):
        self.max_bytes = max_mb * 2 ** 20
        self.store: dict[bytes, tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]] = {}
        self.grid: tuple[int, int] | None = None
        self.bytes = self.hits = self.misses = 0

    def features(self, pixel_values: torch.Tensor, encode) -> VisualFeatures:
        """``encode(pixels) -> VisualFeatures`` runs only on the images not seen before."""
        keys = [pixel_key(p) for p in pixel_values]
        fresh: dict[bytes, tuple] = {}
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            with torch.no_grad():
                out = encode(pixel_values[missing])
            self.grid = out.grid
            for row, i in enumerate(missing):
                entry = (out.features[row], [layer[row] for layer in out.layers],
                         None if out.cls is None else out.cls[row])
                fresh[keys[i]] = entry
                size = sum(t.numel() * t.element_size() for t in (entry[0], *entry[1]))
                if self.bytes + size <= self.max_bytes:
                    self.store[keys[i]], self.bytes = entry, self.bytes + size
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        rows = [self.store.get(k) or fresh[k] for k in keys]
        n_layers = len(rows[0][1])
        return VisualFeatures(features=torch.stack([r[0] for r in rows]),                 # [B, N, D_vis]
                              grid=self.grid,
                              layers=[torch.stack([r[1][j] for r in rows]) for j in range(n_layers)],
                              cls=None if rows[0][2] is None else torch.stack([r[2] for r in rows]))

    def summary(self) -> str:
        return (f"frozen vision features: {len(self.store)} images cached ({self.bytes / 2 ** 20:.1f} MB), "
                f"{self.hits} lookups, {self.misses} encodings")
