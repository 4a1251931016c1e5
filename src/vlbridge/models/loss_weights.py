"""How supervised tokens are weighted in the LM loss.

- ``token`` (LLaVA's default): every supervised token counts the same, so long answers (captions, boxes
  spelled digit by digit) dominate the gradient.
- ``sqrt`` (InternVL 2.5's "square averaging"): each token of an answer of n tokens weighs 1/sqrt(n).
- ``answer``: each token weighs 1/n, so every answer counts the same whatever its length.

An answer is a contiguous run of supervised labels (assistant message + end marker).
"""
from __future__ import annotations

import torch

from ..data.template import IGNORE_INDEX
from ..config import register_names

LOSS_WEIGHTINGS = ("token", "sqrt", "answer")
register_names("loss_weightings", lambda: LOSS_WEIGHTINGS)



def answer_weights(labels: torch.Tensor, mode: str = "token") -> torch.Tensor:
    """labels [..., L] -> float weights [..., L]: 0 where unsupervised, else by the length of the answer run."""
    if mode not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {mode!r}; choose from {', '.join(LOSS_WEIGHTINGS)}")
    supervised = labels != IGNORE_INDEX
    if mode == "token":
        return supervised.float()
    flat = supervised.reshape(-1, supervised.shape[-1])
    out = torch.zeros(flat.shape, dtype=torch.float32)
    for row, sup in zip(out, flat):
        starts = sup & ~torch.cat([torch.zeros(1, dtype=torch.bool), sup[:-1]])   # first token of each run
        run_id = starts.cumsum(0) * sup                                              # 0 = unsupervised
        lengths = torch.bincount(run_id, minlength=int(run_id.max()) + 1).float()
        n = lengths[run_id]
        row[sup] = (1.0 / n[sup]) if mode == "answer" else n[sup].rsqrt()
    return out.reshape(supervised.shape)
