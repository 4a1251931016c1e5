"""Boxes as text: LION's normalised ``[x1,y1,x2,y2]`` with 3 decimals, robust parsing, IoU.

Generated boxes are messy: brackets or parentheses, spaces, values outside [0, 1], swapped corners,
pixel coordinates, truncated output. ``parse_box`` returns a ``ParsedBox`` that says what happened: the
clamped, ordered box, or ``None`` with the reason it could not be read (an unparsable answer is a
miss and is counted as such by the REC metric, never dropped).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

Box = tuple[float, float, float, float]  # normalised x1, y1, x2, y2 with x1 <= x2, y1 <= y2

_NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)"
# four numbers separated by commas/spaces, inside [] or () (or bare as a fallback)
_BRACKETED = re.compile(rf"[\[(]\s*({_NUMBER})\s*[, ]\s*({_NUMBER})\s*[, ]\s*({_NUMBER})\s*[, ]\s*({_NUMBER})\s*[\])]")
_BARE = re.compile(rf"({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})")


def format_box(box: Sequence[float]) -> str:
    """Normalised [x1, y1, x2, y2] -> "[0.125,0.250,0.375,0.500]" (3 decimals, LION's format)."""
    if len(box) != 4:
        raise ValueError(f"box needs 4 values, got {len(box)}")
    return "[" + ",".join(f"{float(v):.3f}" for v in box) + "]"


@dataclass(frozen=True)
class ParsedBox:
    box: Box | None          # clamped to [0, 1] and ordered; None when unparsable
    error: str | None = None  # why it could not be parsed
    fixed: tuple[str, ...] = ()  # repairs applied: "clamped", "reordered", "pixels"

    @property
    def ok(self) -> bool:
        return self.box is not None


def _normalise(values: list[float], image_size: tuple[int, int] | None) -> tuple[list[float], list[str]]:
    fixed: list[str] = []
    if max(values) > 1.5 and image_size is not None:  # pixel coordinates: scale by the image size
        w, h = image_size
        values = [values[0] / w, values[1] / h, values[2] / w, values[3] / h]
        fixed.append("pixels")
    clamped = [min(1.0, max(0.0, v)) for v in values]
    if clamped != values:
        fixed.append("clamped")
    x1, y1, x2, y2 = clamped
    if x1 > x2 or y1 > y2:
        fixed.append("reordered")
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], fixed


def _parse_values(values: list[float], image_size: tuple[int, int] | None) -> ParsedBox:
    if max(values) > 1.5 and image_size is None:
        return ParsedBox(None, f"coordinates {values} exceed 1 and no image size is known")
    box, fixed = _normalise(values, image_size)
    if box[0] == box[2] or box[1] == box[3]:
        return ParsedBox(None, f"degenerate box {format_box(box)} (zero width or height)")
    return ParsedBox(tuple(box), None, tuple(fixed))  # type: ignore[arg-type]


def parse_boxes(text: str, image_size: tuple[int, int] | None = None) -> list[ParsedBox]:
    """Every box in ``text``, in order (bracketed forms first; bare "a, b, c, d" only if none)."""
    matches = list(_BRACKETED.finditer(text)) or list(_BARE.finditer(text))
    return [_parse_values([float(g) for g in m.groups()], image_size) for m in matches]


def find_boxes(text: str, image_size: tuple[int, int] | None = None) -> list[tuple[int, int, ParsedBox]]:
    """Every bracketed box in ``text`` with its character span: ``(start, end, ParsedBox)``, in order.

    Only bracketed forms ("[a,b,c,d]" or "(a b c d)") count here, so that plain numbers in a sentence are
    never taken for a box when a box is to be replaced in place (region tokens, drawing phrases).
    """
    return [(m.start(), m.end(), _parse_values([float(g) for g in m.groups()], image_size))
            for m in _BRACKETED.finditer(text)]


def parse_box(text: str, image_size: tuple[int, int] | None = None) -> ParsedBox:
    """The first box in ``text`` (clamped to [0, 1], corners ordered), or the reason there is none."""
    boxes = parse_boxes(text, image_size)
    if not boxes:
        snippet = text if len(text) <= 60 else text[:57] + "..."
        return ParsedBox(None, f"no box of 4 numbers found in {snippet!r}")
    return boxes[0]


def box_area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two corner-format boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0
