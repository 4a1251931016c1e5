"""Grounding metrics beyond REC/REG (which live in ``vlbridge.eval``): grounded captions and absent objects.

- ``grounded_caption_score``: the reference's (phrase, box) pairs against the prediction's, matched one to
  one when the phrases are equal (case and spacing aside) and the boxes overlap with IoU >= 0.5; per item
  precision, recall and F1 (the headline), plus ``box_recall``: reference boxes hit by any predicted box.
- ``absent_score``: an expression for an absent object is answered correctly when the answer has no box
  and says "not present"; ``boxed`` counts answers that drew a box anyway (Groma's reported failure).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..data.boxes import box_iou, parse_boxes
from ..eval.exact_match import normalize
from .phrases import grounded_phrases

IOU_THRESHOLD = 0.5
NOT_PRESENT = "not present"


@dataclass(frozen=True)
class GroundedCaptionScore:
    precision: float
    recall: float
    f1: float
    box_recall: float
    n_predicted: int
    n_reference: int


def grounded_caption_score(prediction: str, reference: str, threshold: float = IOU_THRESHOLD) -> GroundedCaptionScore:
    ref = grounded_phrases(reference)
    if not ref:
        raise ValueError(f"reference has no phrase with a box: {reference[:80]!r}")
    pred = grounded_phrases(prediction)
    used, matched = set(), 0
    for phrase, box in ref:
        for i, (p_phrase, p_box) in enumerate(pred):
            if i not in used and normalize(p_phrase) == normalize(phrase) and box_iou(p_box, box) >= threshold:
                used.add(i)
                matched += 1
                break
    box_hits = sum(any(box_iou(p_box, box) >= threshold for _, p_box in pred) for _, box in ref)
    precision = matched / len(pred) if pred else 0.0
    recall = matched / len(ref)
    f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
    return GroundedCaptionScore(precision, recall, f1, box_hits / len(ref), len(pred), len(ref))


def absent_score(prediction: str) -> tuple[bool, bool]:
    """(correct: no box and says "not present", boxed: the answer contains a box)."""
    boxed = any(p.ok for p in parse_boxes(prediction))
    return (not boxed and NOT_PRESENT in normalize(prediction)), boxed
