"""Features of a frozen vision encoder, kept per image so that each training image is encoded once.

A frozen encoder in eval mode is a fixed function of the pixels, so from the second epoch on its output can be
looked up instead of recomputed. Images are keyed by a hash of their pixel tensor, not by file name, so a
lookup can never return another image's features, and augmented pixels simply miss. Every tensor the encoder
returns is kept (including the extra layers a connector reads), so connectors see the same inputs whether an
image is cached or not. The cache stops growing at ``max_mb``; it is only attached while the encoder has
nothing to train (``Trainer.setup``), and ``VisionTower.forward`` refuses to use it otherwise.

With a ``directory`` the features also persist on disk, one safetensors file per image under a subdirectory
named by the encoder's fingerprint (its weights, feature layers and requested layers: ``VisionTower.
fingerprint``), so later processes (other runs, other seeds, the evaluation) read them instead of encoding.
Files are written atomically, so concurrent or interrupted writers never leave a partial one.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..connectors.base import VisualFeatures


def pixel_key(pixels: torch.Tensor) -> bytes:
    """Identity of one image's pixel tensor [3, H, W] (shape + dtype + bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(pixels.shape), str(pixels.dtype))).encode())
    h.update(pixels.detach().contiguous().cpu().flatten().view(torch.uint8).numpy().tobytes())   # any dtype
    return h.digest()


class FeatureCache:
    def __init__(self, max_mb: float = 1024.0, directory: str | Path | None = None):
        self.max_bytes = max_mb * 2 ** 20
        self.directory = Path(directory) if directory else None
        self.store: dict[bytes, dict] = {}      # key -> one image's rows of every VisualFeatures tensor
        self.grid: tuple[int, int] | None = None
        self.bytes = self.hits = self.misses = self.disk_hits = 0

    def clear(self) -> None:
        self.store.clear()
        self.bytes = 0

    def keep(self, key: bytes, entry: dict) -> None:
        size = sum(t.numel() * t.element_size() for t in tensors(entry))
        if self.bytes + size <= self.max_bytes:
            self.store[key], self.bytes = entry, self.bytes + size

    def features(self, pixel_values: torch.Tensor, encode, encoder: str | None = None) -> VisualFeatures:
        """``encode(pixels) -> VisualFeatures`` runs only on the images not seen before (in memory, or on disk
        under ``encoder``, the encoder's fingerprint); every tensor it returns (features, feature layers, CLS,
        the extra hidden layers) is kept, so a cached image gives exactly what encoding it again would."""
        keys = [pixel_key(p) for p in pixel_values]
        fresh: dict[bytes, dict] = {}
        folder = self.directory / encoder if self.directory is not None and encoder else None
        for k in keys:
            if k not in self.store and k not in fresh and folder is not None and (folder / file_name(k)).is_file():
                fresh[k], self.grid = read_entry(folder / file_name(k))
                self.keep(k, fresh[k])
                self.disk_hits += 1
        missing = [i for i, k in enumerate(keys) if k not in self.store and k not in fresh]
        if missing:
            with torch.no_grad():
                out = encode(pixel_values[missing])
            self.grid = out.grid
            for row, i in enumerate(missing):
                entry = {"features": out.features[row], "layers": [layer[row] for layer in out.layers],
                         "cls": None if out.cls is None else out.cls[row],
                         "hidden": {j: h[row] for j, h in out.hidden.items()}}
                fresh[keys[i]] = entry
                self.keep(keys[i], entry)
                if folder is not None:
                    write_entry(folder / file_name(keys[i]), entry, out.grid)
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
        disk = f", {self.disk_hits} read from {self.directory}" if self.directory is not None else ""
        return (f"frozen vision features: {len(self.store)} images cached ({self.bytes / 2 ** 20:.1f} MB), "
                f"{self.hits} lookups{disk}, {self.misses} encodings")


def tensors(entry: dict) -> list[torch.Tensor]:
    """Every tensor of one cached image."""
    out = [entry["features"], *entry["layers"], *entry["hidden"].values()]
    return out + ([entry["cls"]] if entry["cls"] is not None else [])


def file_name(key: bytes) -> str:
    return key.hex() + ".safetensors"


def write_entry(path: Path, entry: dict, grid: tuple[int, int]) -> None:
    """One image's tensors as a safetensors file (atomically: a temp file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {"features": entry["features"], **{f"layer.{j}": t for j, t in enumerate(entry["layers"])},
            **{f"hidden.{i}": t for i, t in entry["hidden"].items()}}
    if entry["cls"] is not None:
        flat["cls"] = entry["cls"]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:8]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # each tensor copied into its own contiguous storage: a row of a batch is a (possibly strided) view, and two
    # of them may share memory (a feature layer is also a requested layer); safetensors takes neither
    save_file({k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in flat.items()}, tmp,
              metadata={"grid": f"{grid[0]},{grid[1]}"})
    os.replace(tmp, path)


def read_entry(path: Path) -> tuple[dict, tuple[int, int]]:
    """(the entry, the patch grid) from a file written by ``write_entry``."""
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        rows, cols = (int(v) for v in f.metadata()["grid"].split(","))
    flat = load_file(str(path))
    n_layers = sum(k.startswith("layer.") for k in flat)
    entry = {"features": flat["features"], "layers": [flat[f"layer.{j}"] for j in range(n_layers)],
             "cls": flat.get("cls"),
             "hidden": {int(k.split(".", 1)[1]): v for k, v in flat.items() if k.startswith("hidden.")}}
    return entry, (rows, cols)
