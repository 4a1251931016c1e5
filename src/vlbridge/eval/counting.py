"""Counting accuracy: the first number in the answer (digits or an English number word) against the reference.

"There are three objects." -> 3, "2" -> 2, "none" / "no" alone -> 0. An answer with no number is
unparsable: it scores 0 and is counted as such.
"""
from __future__ import annotations

import re

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS["none"] = 0
_TOKEN = re.compile(r"\d+(?:,\d{3})*|[a-z]+")


def parse_count(text: str) -> int | None:
    """The first count stated in ``text``, or None."""
    tokens = _TOKEN.findall(text.lower())
    for tok in tokens:
        if tok[0].isdigit():
            return int(tok.replace(",", ""))
        if tok in NUMBER_WORDS:
            return NUMBER_WORDS[tok]
    if tokens == ["no"]:
        return 0
    return None


def count_correct(prediction: str, reference: str) -> tuple[float, bool]:
    """(1.0 if the counts agree else 0.0, whether the prediction held a count)."""
    ref = parse_count(reference)
    if ref is None:
        raise ValueError(f"reference {reference!r} states no count")
    pred = parse_count(prediction)
    return float(pred == ref), pred is not None
