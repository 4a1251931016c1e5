"""Referring-expression comprehension: Acc@0.5 and mean IoU of predicted boxes against reference boxes.

Boxes are normalised ``[x1, y1, x2, y2]``. The metric is a function of (predicted box or ``None`` for a
parse failure, reference box), so any way of producing a box (box text read by
``data.boxes.parse_box``, region tokens, a detection head) is scored the same way. A missing or
unparsable prediction is a miss with IoU 0: it counts in the denominator of Acc@0.5 and of mean IoU,
and the number of such answers is reported as ``unparsable``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..data.boxes import box_iou, parse_box

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class BoxOutcome:
    iou: float        # 0.0 when there was no usable predicted box
    hit: bool         # iou >= threshold
    parsed: bool      # a predicted box was available
    error: str | None = None   # why the prediction could not be read


def score_box(predicted: Sequence[float] | None, reference: Sequence[float],
              threshold: float = IOU_THRESHOLD, error: str | None = None) -> BoxOutcome:
    if predicted is None:
        return BoxOutcome(0.0, False, False, error or "no box")
    iou = box_iou(predicted, reference)
    return BoxOutcome(iou, iou >= threshold, True)


def reference_box(text: str, image_size: tuple[int, int] | None = None) -> tuple[float, float, float, float]:
    parsed = parse_box(text, image_size)
    if not parsed.ok:
        raise ValueError(f"reference box unreadable: {parsed.error}")
    return parsed.box  # type: ignore[return-value]


def score_box_text(prediction: str, reference: str, threshold: float = IOU_THRESHOLD,
                   image_size: tuple[int, int] | None = None) -> BoxOutcome:
    """Parse the first box of each text and score them."""
    ref = reference_box(reference, image_size)
    parsed = parse_box(prediction, image_size)
    return score_box(parsed.box, ref, threshold, parsed.error)


def rec_metrics(outcomes: Sequence[BoxOutcome], threshold: float = IOU_THRESHOLD) -> dict[str, float | int]:
    n = len(outcomes)
    return {f"acc@{threshold:g}": sum(o.hit for o in outcomes) / n if n else 0.0,
            "mean_iou": sum(o.iou for o in outcomes) / n if n else 0.0,
            "unparsable": sum(not o.parsed for o in outcomes)}
