"""Regressing the next visual embedding from the LLM's last hidden state, and the guard against collapse.

For an image the sequence produces, ``[IMG] e_1 ... e_M [/IMG]``, the hidden state at ``[IMG]`` predicts
``e_1`` and the state at ``e_i`` predicts ``e_{i+1}`` (i < M) through ``RegressionHead`` (Linear d -> d, no
bias, as Emu); the state at ``e_M`` predicts ``[/IMG]`` through the ordinary next-token loss.
``regression_positions`` lists those (hidden position, target index) pairs for each produced image;
``regression_loss`` scores predictions against targets ("mse": Emu's plain mean squared error; "cosine":
1 - cosine similarity per embedding).

Targets are the connector's own outputs, detached by default (Emu). Detaching them does not make the
objective safe: the same connector also writes the *inputs* the hidden states are computed from, and its
weights move with their gradient, so an embedding that no longer depends on the image (the same M vectors for
every image) makes every next embedding perfectly predictable. ``image_share`` measures how far from that the
targets are: the variance across the batch's images (per embedding index and dimension, averaged) as a share
of the targets' whole variance (which also counts how the M indices differ from each other). ``CollapseGuard``
stops a training run whose share stays below ``ratio`` for ``patience`` batches in a row.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..connectors.base import ImageSlot, TrainingCollapse

LOSSES = ("mse", "cosine")


class RegressionHead(nn.Linear):
    def __init__(self, dim: int):
        super().__init__(dim, dim, bias=False)


def regression_positions(slots: list[ImageSlot], num_tokens: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Rows [n*M] and positions [n*M] of the hidden states that predict each produced image's M embeddings
    (its opening wrap token and its first M-1 visual positions), and the indices of the produced images."""
    produced = [i for i, s in enumerate(slots) if s.produced]
    for i in produced:
        if slots[i].length != num_tokens + 2:
            raise ValueError(f"image {i} takes {slots[i].length} positions; regression expects [IMG] + "
                             f"{num_tokens} embeddings + [/IMG]")
    rows = torch.tensor([slots[i].row for i in produced], dtype=torch.long).repeat_interleave(num_tokens)
    starts = torch.tensor([slots[i].start for i in produced], dtype=torch.long)
    positions = (starts[:, None] + torch.arange(num_tokens)).flatten()          # [IMG], e_1 .. e_{M-1}
    return rows, positions, produced


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """pred, target [n, D] -> scalar: mean squared error over elements, or mean (1 - cosine) over embeddings."""
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "cosine":
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
    raise ValueError(f"regression loss {kind!r}: choose from {LOSSES}")


def mean_variance(x: torch.Tensor) -> float:
    """Variance of each dimension over the rows of x [n, D], averaged over dimensions (0 for one row)."""
    return float(x.detach().float().var(0, unbiased=False).mean()) if len(x) > 1 else 0.0


def image_share(targets: torch.Tensor) -> float | None:
    """targets [n_images, M, D]: the variance across images (per index and dimension, averaged) over the total
    variance of all n*M embeddings; None with fewer than two images."""
    if targets.shape[0] < 2:
        return None
    t = targets.detach().float()
    total = float(t.flatten(0, 1).var(0, unbiased=False).mean())
    return float(t.var(0, unbiased=False).mean()) / total if total > 0 else 0.0


class CollapseGuard:
    """Counts training batches whose regression targets barely depend on the image; raises after ``patience``."""

    def __init__(self, ratio: float, patience: int):
        self.ratio, self.patience, self.run = ratio, patience, 0

    def check(self, share: float | None) -> None:
        if self.ratio <= 0 or share is None:
            return
        self.run = self.run + 1 if share < self.ratio else 0
        if self.run >= self.patience:
            raise TrainingCollapse(
                f"the regression targets collapsed: for {self.run} batches in a row the images' embeddings varied "
                f"from image to image by less than {self.ratio:g} of their variance (last: {share:.2g}), so the "
                "connector gives (nearly) the same embeddings for every image and predicting them needs no image. "
                "Keep the targets detached (`detach_targets: true`), lower `regression_weight`, or train the "
                "regression with the connector frozen (the `generate` stage, after a stage that taught it to read)")
