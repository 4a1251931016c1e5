"""A per-image subset of an image's N raster positions (the kept tokens, or the dropped ones), in two layouts.

Each image keeps a different number of tokens. Row-wise work (LayerNorm, Linear, FFN) runs on the subset
*packed*: ``[T, D]`` with T = the subset's total size over the batch, no padding. Attention runs per image on
the subset *padded* to the batch's largest count L: ``[B, L, D]`` (zeros after each image's own count).
``pad`` and ``pack`` move between the two (both carry gradients); ``take`` picks the subset's rows out of a
full ``[B, N, ...]`` tensor, ``scatter`` writes them back into one.
"""
from __future__ import annotations

import torch


class Subset:
    def __init__(self, mask: torch.Tensor, min_width: int = 0):
        """mask [B, N] bool: the positions of each image that belong to the subset; the padded layout is at
        least ``min_width`` wide."""
        B, N = mask.shape
        self.batch, self.n = B, N
        self.lengths = mask.sum(1)                                              # [B]
        self.width = max(int(self.lengths.max()) if B else 0, min_width)        # L
        # stable sort: the subset's positions first, in raster order
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :self.width]   # [B, L]
        self.valid = torch.arange(self.width, device=mask.device)[None, :] < self.lengths[:, None]   # [B, L]
        self.positions = torch.where(self.valid, order, torch.full_like(order, -1))   # [B, L] raster index, -1 pad
        self.slots = self.valid.flatten().nonzero().squeeze(1)                  # [T] slot of each packed row in B*L
        self.padding = (~self.valid).flatten().nonzero().squeeze(1)            # [B*L - T] the padding slots
        source = torch.arange(B, device=mask.device)[:, None] * N + order                          # [B, L] flat index into B*N
        self.source = source.flatten()[self.slots]                              # [T]

    @property
    def total(self) -> int:
        return len(self.slots)                                                  # T

    def take(self, full: torch.Tensor) -> torch.Tensor:
        """[B, N, ...] -> the subset's rows [T, ...]."""
        return full.flatten(0, 1).index_select(0, self.source)

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """[T, ...] -> [B, L, ...], zeros on padding."""
        out = rows.new_empty((self.batch * self.width,) + rows.shape[1:])
        out.index_fill_(0, self.padding, 0).index_copy_(0, self.slots, rows)   # in place: one pass over memory
        return out.view((self.batch, self.width) + rows.shape[1:])

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, L, ...] -> [T, ...]."""
        return padded.flatten(0, 1).index_select(0, self.slots)

    def scatter(self, rows: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
        """Write the subset's rows [T, ...] into (a copy of) a full tensor [B, N, ...]."""
        flat = into.flatten(0, 1).index_copy(0, self.source, rows)
        return flat.view(into.shape)
