"""Vector quantizer with l2-normalised low-dimensional codes, k-means init, EMA updates and dead-code restarts.

``z = normalize(Linear(tanh(Linear(x))))`` ([.., code_dim]); the nearest code by cosine (both unit length)
gives the id. The codebook is a buffer, not a parameter: it follows the EMA of the vectors assigned to each
code (``embed_sum``, ``cluster_size``), re-normalised to unit length. The encoder learns through the
straight-through estimator ``q_st = z + sg(q - z)`` and the commitment loss ``beta * ||z - sg(q)||^2``.

Tricks the LaVIT maintainers name: initialise the codebook by (spherical) k-means on real encoder outputs
(``kmeans_init``), EMA instead of gradient updates, and restarting codes nobody uses (``restart_dead``: a code
whose EMA usage falls below ``dead_ratio`` of the uniform share is moved onto a random recent vector).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Quantized:
    z: torch.Tensor             # [..., C] unit-length encoder output
    q: torch.Tensor             # [..., C] straight-through quantized vector (value = the code)
    ids: torch.Tensor           # [...] code ids
    commitment: torch.Tensor    # scalar, already weighted


def spherical_kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """k unit-length centroids of unit vectors x [n, C] (k-means++ seeding on cosine distance)."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means initialisation needs at least one vector")
    first = int(torch.randint(n, (1,), generator=generator))
    cents = [x[first]]
    dist = (1 - x @ x[first]).clamp_min(0)
    for _ in range(1, k):
        if float(dist.sum()) <= 0:
            nxt = int(torch.randint(n, (1,), generator=generator))
        else:
            nxt = int(torch.multinomial(dist, 1, generator=generator))
        cents.append(x[nxt])
        dist = torch.minimum(dist, (1 - x @ x[nxt]).clamp_min(0))
    c = torch.stack(cents)                                                  # [k, C]
    for _ in range(iters):
        assign = (x @ c.T).argmax(1)                                        # [n]
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        used = torch.bincount(assign, minlength=k) > 0
        c = torch.where(used[:, None], F.normalize(sums, dim=-1), c)
    return c


class EMAQuantizer(nn.Module):
    def __init__(self, in_dim: int, code_dim: int, size: int, decay: float = 0.99, commitment: float = 0.25,
                 dead_ratio: float = 0.03):
        super().__init__()
        self.size, self.decay, self.beta, self.dead_ratio = size, decay, commitment, dead_ratio
        self.proj = nn.Sequential(nn.Linear(in_dim, in_dim), nn.Tanh(), nn.Linear(in_dim, code_dim))
        self.register_buffer("codebook", F.normalize(torch.randn(size, code_dim), dim=-1))   # [K, C]
        self.register_buffer("cluster_size", torch.full((size,), 1.0))                     # [K] EMA counts
        self.register_buffer("embed_sum", self.codebook.clone())                           # [K, C] EMA sums
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x), dim=-1)                            # [..., C]

    def lookup(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.codebook.T).argmax(-1)                             # [...] nearest code by cosine

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.codebook[ids]                                           # [..., C]

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None, update: bool | None = None) -> Quantized:
        """x [..., D]; valid [...] bool marks real (non-padding) vectors; EMA update when training (or `update`)."""
        z = self.encode(x)
        valid = torch.ones(z.shape[:-1], dtype=torch.bool) if valid is None else valid
        if (self.training if update is None else update):
            flat = z.detach()[valid]
            if not bool(self.initialised):
                self.kmeans_init(flat)
            self.ema_update(flat, self.lookup(flat))
        ids = self.lookup(z.detach())
        q = self.embed(ids)
        mask = valid[..., None].to(z.dtype)
        commit = self.beta * (((z - q.detach()) ** 2) * mask).sum() / mask.sum().clamp_min(1)
        return Quantized(z, z + (q - z).detach(), ids, commit)

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, iters: int = 10, generator: torch.Generator | None = None) -> None:
        """Codebook = spherical k-means centroids of the unit vectors z [n, C]; usage statistics reset."""
        self.codebook.copy_(spherical_kmeans(z, self.size, iters, generator))
        counts = torch.bincount(self.lookup(z), minlength=self.size).float()
        self.cluster_size.copy_(counts.clamp_min(1.0))
        self.embed_sum.copy_(self.codebook * self.cluster_size[:, None])
        self.initialised.fill_(True)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, ids: torch.Tensor) -> None:
        """z [n, C] unit vectors assigned to codes ids [n]."""
        counts = torch.bincount(ids, minlength=self.size).to(z.dtype)                # [K]
        sums = torch.zeros_like(self.embed_sum).index_add_(0, ids, z)             # [K, C]
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        norms = self.embed_sum.norm(dim=-1, keepdim=True)
        self.codebook.copy_(torch.where(norms > 1e-6, self.embed_sum / norms.clamp_min(1e-12), self.codebook))

    def dead_codes(self) -> torch.Tensor:
        """[K] bool: codes whose EMA usage is below dead_ratio x the uniform share."""
        share = self.cluster_size.sum() / self.size
        return self.cluster_size < self.dead_ratio * share

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move dead codes onto random vectors of z [n, C] (with their share of usage); returns how many."""
        dead = self.dead_codes().nonzero().flatten()
        if len(dead) == 0 or len(z) == 0:
            return 0
        pick = torch.randint(len(z), (len(dead),), generator=generator)
        share = self.cluster_size.sum() / self.size
        self.codebook[dead] = z[pick]
        self.cluster_size[dead] = share
        self.embed_sum[dead] = z[pick] * share
        return len(dead)


def usage(ids: torch.Tensor, size: int) -> dict[str, float]:
    """Codebook usage of a set of ids: perplexity (exp of the usage entropy), codes used and unused."""
    counts = torch.bincount(ids.flatten(), minlength=size).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    used = int((counts > 0).sum())
    return {"perplexity": float(entropy.exp()), "used": used, "unused": size - used, "n": int(counts.sum())}
