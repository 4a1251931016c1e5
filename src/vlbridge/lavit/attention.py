"""Multi-head attention where keys are switched on/off per image, with a straight-through gradient.

Token selection is a hard 0/1 decision per key, but the selector learns from the gradient of the loss with
respect to that decision (DynamicViT / LaVIT). ``attend`` therefore takes, besides the structural boolean
mask (causality), a per-key weight ``w [B, Nk]`` whose forward value is exactly the hard decision:

- without gradient (inference, frozen tokenizer): SDPA with the boolean mask ``allowed & (w > 0.5)``;
- with gradient: SDPA over the structurally allowed keys with values extended by w, ``out = sum_j a_ij w_j
  v_j / sum_j a_ij w_j``. For 0/1 weights this is the same attention (keys with w = 0 drop out of numerator
  and denominator), and its gradient reaches every key's w (also dropped keys': ``a_ij (v_j - out_i) /
  sum``), as in DynamicViT's masked softmax.

An optional additive ``bias`` (e.g. the decoder's learned query-position x code-index bias) turns the mask
into SDPA's float form (-inf outside). A query with no admitted key gets exactly zero output *after* the output projection (no bias leak): this is
the "nothing dropped" case of the merger's cross-attention, where the released code instead attends
uniformly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeyMaskedAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        kv_dim = kv_dim or dim
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.heads, self.head_dim).transpose(1, 2)     # [B, H, N, hd]

    def forward(self, x: torch.Tensor, kv: torch.Tensor, allowed: torch.Tensor | None,
                key_on: torch.Tensor, key_weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, Nq, D] queries; kv [B, Nk, Dkv]; allowed [Nq, Nk] or [B, Nq, Nk] bool (None = all);
        key_on [B, Nk] bool hard decision; key_weight [B, Nk] its straight-through 0/1 weight (optional);
        bias [B, H, Nq, Nk] added to the attention logits (optional, e.g. a learned position bias)."""
        B, Nq, _ = x.shape
        Nk = kv.shape[1]
        if allowed is None:
            allowed = torch.ones(Nq, Nk, dtype=torch.bool)
        allowed = allowed.expand(B, Nq, Nk)
        admitted = allowed & key_on[:, None, :]                             # [B, Nq, Nk]
        has_key = admitted.any(-1)                                          # [B, Nq]
        q, k, v = self._split(self.q(x)), self._split(self.k(kv)), self._split(self.v(kv))
        st = key_weight is not None and key_weight.requires_grad
        mask = (allowed if st else admitted)[:, None]                      # [B, 1, Nq, Nk] bool
        if bias is not None:                                               # additive form; rows without keys
            live = mask | ~has_key[:, None, :, None]                       # keep finite logits (output zeroed)
            mask = bias.masked_fill(~live, float("-inf"))
        if not st:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, Nq, hd]
        else:
            w = key_weight[:, None, :, None].expand(B, self.heads, Nk, 1)  # [B, H, Nk, 1]
            both = F.scaled_dot_product_attention(q, k, torch.cat([v * w, w], -1), attn_mask=mask)
            num, den = both[..., :-1], both[..., -1:]                       # [B, H, Nq, hd], [B, H, Nq, 1]
            out = num / torch.where(has_key[:, None, :, None], den, torch.ones_like(den))
        out = self.o(out.transpose(1, 2).reshape(B, Nq, -1))                # [B, Nq, D]
        return out * has_key[..., None].to(out.dtype)
