"""Spatial feature maps for the region proposer and the region encoder, from any encoder layer.

The LLM's image tokens come from ``vision.feature_layers``; region features may come from other layers,
e.g. an earlier, higher-resolution stage of a conv encoder (the tiny ResNet: 16x16 after its first stage vs
8x8 at the end), as Groma reads regions from a high-resolution map while the LLM gets a cheaper view.

``encode_with_hidden_states`` runs the vision tower once and also returns every hidden state (captured from
the HF model's output with a forward hook, so the tower itself is unchanged); ``hidden_to_map`` turns one
hidden state into ``[B, C, H, W]`` (conv maps as they are; ViT tokens without their CLS/prefix, on the grid).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def encode_with_hidden_states(tower, pixel_values: torch.Tensor):
    """(VisualFeatures for the connector, tuple of every hidden state of the encoder) from one forward pass."""
    captured = {}

    def keep(_module, _args, output):
        captured["hidden"] = output.hidden_states

    handle = tower.model.register_forward_hook(keep)
    try:
        feats = tower(pixel_values)
    finally:
        handle.remove()
    return feats, captured["hidden"]


def hidden_to_map(h: torch.Tensor, image_hw: tuple[int, int], patch_size: int | None) -> torch.Tensor:
    """One hidden state -> [B, C, H, W]: conv maps unchanged, tokens [B, P + rows*cols, D] put on their grid."""
    if h.dim() == 4:
        return h
    if patch_size is None:
        raise ValueError("a token hidden state needs the encoder's patch_size to be put on a grid")
    rows, cols = image_hw[0] // patch_size, image_hw[1] // patch_size
    patches = h[:, h.shape[1] - rows * cols:]                                  # drop CLS/prefix: [B, N, D]
    return patches.transpose(1, 2).reshape(h.shape[0], h.shape[2], rows, cols)


def select_maps(hidden: tuple, layers: list[int], image_hw: tuple[int, int], patch_size: int | None) -> list[torch.Tensor]:
    return [hidden_to_map(hidden[i], image_hw, patch_size) for i in layers]


def coordinate_channels(fmap: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C + 2, H, W] with the x and y of each cell centre in [0, 1] appended."""
    B, _, H, W = fmap.shape
    ys = ((torch.arange(H, dtype=fmap.dtype) + 0.5) / H)[:, None].expand(H, W)
    xs = ((torch.arange(W, dtype=fmap.dtype) + 0.5) / W)[None, :].expand(H, W)
    return torch.cat([fmap, torch.stack([xs, ys])[None].expand(B, -1, -1, -1)], 1)


class FusedMap(nn.Module):
    """Several levels -> one map at the finest level's resolution: 1x1 conv per level (with coordinate
    channels), bilinear upsampling, sum. ``[B, C_l, H_l, W_l] * L -> [B, dim, H_max, W_max]``."""

    def __init__(self, in_dims: list[int], dim: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(d + 2, dim, 1) for d in in_dims)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        out = 0
        for proj, m in zip(self.proj, maps):
            x = proj(coordinate_channels(m))
            out = out + (x if x.shape[-2:] == size else F.interpolate(x, size=tuple(size), mode="bilinear",
                                                                      align_corners=False))
        return out
