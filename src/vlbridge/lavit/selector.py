"""The token selector: a keep/drop decision per patch from local + global (mean-pooled) features.

``u = GELU(Linear(LN(x)))``; the first half of u's channels stays per token (local), the second half is
averaged over the image's tokens (global); both are concatenated and an MLP (width halving, GELU) gives
(keep, drop) log-probabilities. Decisions:

- ``gumbel`` (training): straight-through hard Gumbel-softmax, index 0 = keep. The forward value is the
  hard 0/1 decision; the gradient is that of the soft Gumbel sample.
- ``argmax`` (inference default): deterministic, keep when p(keep) > p(drop).
- ``sample`` (inference option): keep with probability p(keep), from a ``torch.Generator``.

Every image keeps at least ``min_keep`` tokens (the highest p(keep) are forced on): an image never loses all
its tokens, the known failure early in training. The keep-ratio regulariser is
``weight * (mean p(keep) - target)^2`` over the batch (a batch-level rate, so busy images may keep more
tokens than plain ones).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("gumbel", "argmax", "sample")


@dataclass
class Selection:
    keep: torch.Tensor          # [B, N] bool, the hard decision
    weight: torch.Tensor        # [B, N] float 0/1 forward value; straight-through gradient in 'gumbel' mode
    keep_prob: torch.Tensor     # [B, N] p(keep)
    log_probs: torch.Tensor     # [B, N, 2] (keep, drop)

    @property
    def lengths(self) -> torch.Tensor:
        return self.keep.sum(1)                     # [B] kept tokens per image


class TokenSelector(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"token selector: feature width must be even (local/global halves), got {dim}")
        self.norm = nn.LayerNorm(dim)
        self.inp = nn.Linear(dim, dim)
        h1, h2 = max(dim // 2, 2), max(dim // 4, 2)
        self.mlp = nn.Sequential(nn.Linear(dim, h1), nn.GELU(), nn.Linear(h1, h2), nn.GELU(), nn.Linear(h2, 2))

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        u = F.gelu(self.inp(self.norm(x)))                              # [B, N, D]
        local, glob = u.chunk(2, dim=-1)                                # [B, N, D/2] each
        glob = glob.mean(1, keepdim=True).expand_as(glob)               # image-level context
        return F.log_softmax(self.mlp(torch.cat([local, glob], -1)), -1)   # [B, N, 2]

    def forward(self, x: torch.Tensor, mode: str = "argmax", tau: float = 1.0, min_keep: int = 1,
                generator: torch.Generator | None = None, noise: float = 1.0) -> Selection:
        """noise scales the Gumbel noise in 'gumbel' mode (annealing it to 0 ends training on the argmax
        decisions used at inference, with the straight-through gradient of softmax(log p / tau))."""
        if mode not in MODES:
            raise ValueError(f"token selector: mode must be one of {MODES}, got {mode!r}")
        logp = self.log_probs(x)
        keep_prob = logp[..., 0].exp()
        soft = None
        if mode == "gumbel":
            u = torch.rand(logp.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
            soft = F.softmax((logp - noise * torch.log(-torch.log(u))) / tau, -1)[..., 0]   # [B, N] soft keep
            keep = soft > 0.5                                            # = argmax of the 2-way Gumbel sample
        elif mode == "sample":
            keep = torch.rand(keep_prob.shape, generator=generator) < keep_prob.detach()
        else:
            keep = logp[..., 0] > logp[..., 1]
        keep = force_min_keep(keep, keep_prob.detach(), min_keep)
        hard = keep.to(x.dtype)
        weight = hard + (soft - soft.detach()) if soft is not None else hard     # exactly 0/1 forward
        return Selection(keep, weight, keep_prob, logp)


def force_min_keep(keep: torch.Tensor, score: torch.Tensor, min_keep: int) -> torch.Tensor:
    """Keep the ``min_keep`` highest-scoring tokens of every image in addition to those already kept."""
    k = min(min_keep, keep.shape[1])
    if k <= 0:
        return keep
    top = score.topk(k, dim=1).indices                                  # [B, k]
    return keep | torch.zeros_like(keep).scatter_(1, top, True)


def ratio_loss(sel: Selection, target: float, weight: float) -> torch.Tensor:
    """weight * (kept share of the batch - target)^2. The value is the share really kept (hard decisions); the
    gradient goes straight to every token's keep-vs-drop logit margin (identity straight-through), so the
    regulariser keeps acting when decisions saturate (p(keep) near 0 or 1, where dp/dlogit vanishes)."""
    margin = sel.log_probs[..., 0] - sel.log_probs[..., 1]                  # [B, N]
    share = (sel.keep.to(margin.dtype) + (margin - margin.detach())).mean()
    return weight * (share - target) ** 2

