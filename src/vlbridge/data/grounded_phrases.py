"""Phrases with boxes: split a grounded answer into (phrase, box) pairs.

"a small red circle [0.1,0.2,0.3,0.4] and a large blue square [0.5,0.5,0.9,0.9]." gives
``[("a small red circle", box1), ("a large blue square", box2)]``: each box belongs to the text between
the previous box (or the start) and itself, without joining words ("and", commas, full stops). A box
with no text before it (a bare REC answer) gets the phrase ``""``; unparsable boxes are skipped.
"""
from __future__ import annotations

import re

from ..data.boxes import Box, find_boxes

_LEADING = re.compile(r"^(?:\s|[,.;:]|\band\b|\bthen\b)+", re.IGNORECASE)
_TRAILING = re.compile(r"(?:\s|[,;:]|\bat\b|\bis\b)+$", re.IGNORECASE)


def clean_phrase(text: str) -> str:
    return _TRAILING.sub("", _LEADING.sub("", text)).strip()


def grounded_phrases(text: str) -> list[tuple[str, Box]]:
    pairs, pos = [], 0
    for start, end, parsed in find_boxes(text):
        if parsed.ok:
            pairs.append((clean_phrase(text[pos:start]), parsed.box))
        pos = end
    return pairs
