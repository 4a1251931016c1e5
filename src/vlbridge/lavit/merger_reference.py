"""The merger over all N positions under masks: the reference the kept-token path is tested and timed against.

Every position (kept or dropped) passes every block: self-attention with the boolean mask ``j <= i and j
kept`` (or DynamicViT's weighted softmax with straight-through weights), cross-attention over all positions
with only the dropped ones admitted, FFN; then the kept positions are gathered. ``TokenMerger.forward`` computes
the same kept outputs (and, with straight-through weights, the same ``full`` and the same gradients) from the
kept tokens; ``tests/test_lavit_merger.py`` and ``bench/lavit_tokens.py`` compare the two.
"""
from __future__ import annotations

import torch

from .merger import Merged, TokenMerger
from .selector import Selection


def merge_all_tokens(merger: TokenMerger, x: torch.Tensor, sel: Selection) -> Merged:
    """The same parameters as ``merger(x, sel)``, every position computed; ``full`` = all outputs [B, N, D]."""
    if merger.pos is not None:
        x = x + merger.pos                                                 # [B, N, D]
    B, N, _ = x.shape
    causal = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()                    # [N, N] j <= i
    h = x
    for block in merger.blocks:
        hn = block.norm_self(h)
        h = h + block.self_attn(hn, hn, causal, sel.keep, sel.weight)
        bias = block.cross_bias().expand(B, -1, -1, -1) if block.cross_bias is not None else None
        h = h + block.cross_attn(block.norm_cross(h), block.norm_kv(x), None, ~sel.keep, 1 - sel.weight, bias)
        h = h + block.ffn(block.norm_ffn(h))
    h = merger.norm(h)
    merged = gather_kept(h, sel.keep)
    merged.full = h
    return merged


def gather_kept(h: torch.Tensor, keep: torch.Tensor) -> Merged:
    """Kept positions of h [B, N, D] in raster order -> [B, M_max, D] (zero padding) + lengths + positions."""
    B, N, D = h.shape
    lengths = keep.sum(1)                                                  # [B]
    M = max(int(lengths.max()), 1) if B else 1
    # stable order: kept positions first (in raster order), then the rest
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :M]   # [B, M]
    valid = torch.arange(M, device=h.device)[None, :] < lengths[:, None]                    # [B, M]
    tokens = h.gather(1, order[..., None].expand(B, M, D)) * valid[..., None].to(h.dtype)
    return Merged(tokens, lengths, torch.where(valid, order, torch.full_like(order, -1)))
