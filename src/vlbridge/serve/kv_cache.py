"""Row surgery on a transformers ``DynamicCache`` for continuous batching: join, select, pad and trim rows.

Keys and values of every layer are ``[B, H, T, d]`` with rotary positions already applied, so a row's
columns can be shifted right (left padding, masked out by the attention mask) without changing what it
attends to. Each function edits the cache in place and returns the matching ``[B, T]`` attention mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache


def _layers(cache: DynamicCache):
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False) or getattr(layer, "keys", None) is None:
            raise ValueError("continuous batching needs an initialised DynamicCache of full-attention layers")
        yield layer


def join(cache: DynamicCache, mask: torch.Tensor, other: DynamicCache, other_mask: torch.Tensor) -> torch.Tensor:
    """Append ``other``'s rows to ``cache`` (the shorter side is left-padded); returns the joined mask."""
    T, U = mask.shape[1], other_mask.shape[1]
    width = max(T, U)
    for a, b in zip(_layers(cache), _layers(other)):
        a.keys = torch.cat([F.pad(a.keys, (0, 0, width - T, 0)), F.pad(b.keys, (0, 0, width - U, 0))])
        a.values = torch.cat([F.pad(a.values, (0, 0, width - T, 0)), F.pad(b.values, (0, 0, width - U, 0))])
    return torch.cat([F.pad(mask, (width - T, 0)), F.pad(other_mask, (width - U, 0))])


def select(cache: DynamicCache, mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Keep only ``rows`` (a LongTensor of row indices), then drop the leading columns no kept row uses."""
    for layer in _layers(cache):
        layer.keys, layer.values = layer.keys[rows], layer.values[rows]
    mask = mask[rows]
    used = mask.any(0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1]
    if start:
        for layer in _layers(cache):
            layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        mask = mask[:, start:]
    return mask
