"""One ParGo projector layer (BERT-style, post-LN), with a structured and a dense-mask attention path.

    h = LN(h + SelfAttn(h, M_self))          Cascaded Partial Perception (band among partial tokens)
    h = LN(h + CrossAttn(h, V, M_cross))     Partial-Global Perception (window / all patches)
    h = LN(h + FFN(h))

``dense``      one masked SDPA over all T = P + G queries and all N patches (the reference: O(T*N)).
``structured`` the same function computed from the structure:
               - cross-attention: partial token i attends over its gathered window only ([B, P, K, ...],
                 O(P*K)), global tokens over all patches without a mask;
               - the first layer's self-attention and cross-attention query projection see only the
                 learned queries (no image yet): they run once, at batch 1, and broadcast (with dropout > 0
                 their dropout mask is then shared by the images of a batch);
               - the self-attention is one masked SDPA in both paths: T x T is small (304^2 at the
                 released scale), too small for splitting it into band/global groups to pay.
Both paths share every parameter; tests assert equal outputs and gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ParGoLayer(nn.Module):
    def __init__(self, hidden: int, vis_dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"pargo: hidden {hidden} is not divisible by heads {heads}")
        self.heads, self.head_dim, self.dropout = heads, hidden // heads, dropout
        self.self_qkv = nn.Linear(hidden, 3 * hidden)
        self.self_out = nn.Linear(hidden, hidden)
        self.self_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.cross_q = nn.Linear(hidden, hidden)
        self.cross_kv = nn.Linear(vis_dim, 2 * hidden)
        self.cross_out = nn.Linear(hidden, hidden)
        self.cross_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

    def _heads(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """[B, L, n*H] (n fused projections) -> n tensors [B, h, L, d]."""
        return x.unflatten(-1, (n, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-3, -2).flatten(-2)                                      # [B, h, L, d] -> [B, L, H]

    def _residual(self, norm: nn.LayerNorm, h: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return norm(h + F.dropout(branch, self.dropout, self.training))

    # ---- Cascaded Partial Perception -------------------------------------------------------------------
    def self_attention(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """h [b, T, H] -> [b, T, H] under mask [T, T] (the CPP band, the global block, partial<->global; None =
        every query sees every query)."""
        q, k, v = self._heads(self.self_qkv(h), 3)                                  # each [b, h, T, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self._residual(self.self_norm, h, self.self_out(self._merge(out)))

    # ---- Partial-Global Perception ---------------------------------------------------------------------
    def cross_attention(self, h, feats, num_partial: int, mask: torch.Tensor, window: torch.Tensor,
                        partition: bool, structured: bool) -> torch.Tensor:
        """h [b, T, H] (b = 1 or B), feats [B, N, D_vis] -> [B, T, H].
        mask [T, N] (dense); window [P, K] patch indices and partition (= window is arange(N).view(P, K))."""
        q = self.cross_q(h)                                                         # [b, T, H]
        kv = self.cross_kv(feats)                                                   # [B, N, 2H]
        if structured:
            out = self.windowed_attention(q, kv, num_partial, window, partition)
        else:
            out = self.masked_attention(q, kv, mask)
        return self._residual(self.cross_norm, h, self.cross_out(out))

    def masked_attention(self, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The dense cross-attention core: q [b, T, H], kv [B, N, 2H] -> [B, T, H] under mask [T, N]."""
        (qh,) = self._heads(q)
        k, v = self._heads(kv, 2)                                                   # [B, h, N, d]
        qh = qh.expand(kv.shape[0], -1, -1, -1)                                     # [B, h, T, d]
        return self._merge(F.scaled_dot_product_attention(qh, k, v, attn_mask=mask))

    def windowed_attention(self, q: torch.Tensor, kv: torch.Tensor, p: int, window: torch.Tensor,
                           partition: bool) -> torch.Tensor:
        """The structured cross-attention core: partial token i over its K gathered patches, global tokens
        over all N. q [b, T, H], kv [B, N, 2H] -> [B, T, H]."""
        batch, (n_win, size) = kv.shape[0], window.shape
        if partition:
            win = kv.view(batch, n_win, size, -1)                                   # a view: no gather
        else:
            win = kv.index_select(1, window.flatten()).view(batch, n_win, size, -1)  # [B, P, K, 2H]
        win_k, win_v = win.unflatten(-1, (2, self.heads, self.head_dim)).unbind(-3)  # [B, P, K, h, d]
        q_p = q[:, :p].unflatten(-1, (self.heads, self.head_dim))[:, :, None]       # [b, P, 1, h, d]
        scores = (q_p * win_k).sum(-1) * self.head_dim ** -0.5                      # [B, P, K, h]
        part = (scores.softmax(2)[..., None] * win_v).sum(2).flatten(-2)           # [B, P, H]
        (q_g,) = self._heads(q[:, p:])
        k, v = self._heads(kv, 2)                                                   # [B, h, N, d]
        glob = F.scaled_dot_product_attention(q_g.expand(batch, -1, -1, -1), k, v)  # [B, h, G, d]
        return torch.cat([part, self._merge(glob)], dim=1)

    def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
        return self._residual(self.ffn_norm, h, self.ffn(h))
