"""Referring-expression generation (box -> description): exact match per item plus CIDEr-D over the split.

ShapesWorld's descriptions are templated ("a small red circle"), so exact match is the headline number;
CIDEr-D (IDF over the whole split, see ``captioning``) gives partial credit for a partly right description.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .captioning import caption_scores
from .exact_match import exact_match


@dataclass
class RegScores:
    exact_match: float
    cider: float
    tokenizer: str
    per_item_exact: list[float]
    per_item_cider: list[float]


def reg_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = "auto") -> RegScores:
    exact = [max(exact_match(p, r) for r in refs) for p, refs in zip(predictions, references)]
    caps = caption_scores(predictions, references, tokenizer)
    return RegScores(sum(exact) / len(exact) if exact else 0.0, caps.cider, caps.tokenizer, exact, caps.per_item_cider)
