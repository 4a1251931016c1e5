"""Multi-head attention where keys are switched on/off per image, with a straight-through gradient.

Token selection is a hard 0/1 decision per key, but the selector learns from the gradient of the loss with
respect to that decision (DynamicViT / LaVIT). ``forward`` therefore takes, besides the structural boolean
mask (causality), a per-key weight ``w [B, Nk]`` whose forward value is exactly the hard decision:

- without gradient (inference, frozen tokenizer): SDPA with the boolean mask ``allowed & key_on``;
- with gradient (training): DynamicViT's weighted softmax over the structurally allowed keys,
  ``out_i = sum_j e_ij w_j v_j / sum_j e_ij w_j`` with ``e_ij = exp(s_ij - max over admitted keys)``. For 0/1
  weights this is the same attention (keys with w = 0 drop out of numerator and denominator), and its
  gradient reaches every key's w, dropped keys' too (``e_ij (v_j - out_i) / sum``). Written out by hand
  rather than with SDPA because normalising by the *admitted* keys' maximum keeps the denominator >= 1:
  when dropped keys dominate the scores, a softmax over all keys underflows the admitted mass and the
  gradient becomes inf/NaN. Logits of non-admitted keys are capped at 20 above that maximum.

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
        self.n_heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, H, N, hd]."""
        B, N, _ = x.shape
        return x.view(B, N, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, allowed: torch.Tensor | None,
                key_on: torch.Tensor, key_weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, Nq, D] queries; kv [B, Nk, Dkv]; allowed [Nq, Nk] or [B, Nq, Nk] bool (None = all);
        key_on [B, Nk] bool hard decision; key_weight [B, Nk] its straight-through 0/1 weight (optional);
        bias [B, H, Nq, Nk] added to the attention logits (optional, e.g. a learned position bias)."""
        q, k, v = self.split_heads(self.q(x)), self.split_heads(self.k(kv)), self.split_heads(self.v(kv))
        out, has_key = self.attend(q, k, v, allowed, key_on, key_weight, bias)
        return self.o(out) * has_key[..., None].to(out.dtype)               # [B, Nq, D]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None,
               key_on: torch.Tensor, key_weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention between projected heads q [B, H, Nq, hd], k, v [B, H, Nk, hd], before the output
        projection: returns the heads merged [B, Nq, D] and has_key [B, Nq] (whether a query admitted any key;
        the caller zeroes the rows without one after the output projection)."""
        B, _, Nq, _ = q.shape
        if allowed is None:                                                 # every query: the same keys
            admitted = key_on[:, None, :]                                   # [B, 1, Nk]
            has_key = admitted.any(-1).expand(B, Nq)                        # [B, Nq]
        else:
            allowed = allowed.expand(B, Nq, -1)                             # [B, Nq, Nk]
            admitted = allowed & key_on[:, None, :]                         # [B, Nq, Nk]
            has_key = admitted.any(-1)                                      # [B, Nq]
        if key_weight is None or not key_weight.requires_grad:
            mask = admitted[:, None]                                       # [B, 1, Nq or 1, Nk] bool
            if bias is not None:                                           # additive form; rows without keys
                live = mask | ~has_key[:, None, :, None]                   # keep finite logits (output zeroed)
                                                                           # [B, 1, Nq, Nk]
                mask = bias.masked_fill(~live, float("-inf"))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, Nq, hd]
        else:
            out = self._weighted(q, k, v, allowed, admitted, key_weight, bias)
        return out.transpose(1, 2).flatten(2), has_key

    def _weighted(self, q, k, v, allowed, admitted, key_weight, bias) -> torch.Tensor:
        """The straight-through path: softmax weighted by key_weight, normalised by the admitted keys' max."""
        s = q @ k.transpose(-1, -2) / self.head_dim ** 0.5                  # [B, H, Nq, Nk]
        if bias is not None:
            s = s + bias
        adm = admitted[:, None]                                             # [B, 1, Nq or 1, Nk]
        top = s.detach().masked_fill(~adm, float("-inf")).amax(-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # rows without admitted keys
        e = torch.exp((s - top).clamp(max=20.0))                            # [B, H, Nq, Nk]
        if allowed is not None:
            e = e * allowed[:, None]
        ew = e * key_weight[:, None, None, :]
        den = ew.sum(-1, keepdim=True)
        den = torch.where(adm.any(-1, keepdim=True), den, torch.ones_like(den))
        return (ew @ v) / den                                               # [B, H, Nq, hd]
