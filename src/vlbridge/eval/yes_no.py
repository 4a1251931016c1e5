"""POPE-style yes/no metrics: accuracy, precision, recall, F1 ("yes" is the positive class), yes-ratio.

Answers are read by ``parse_yes_no``: a leading yes/no word decides ("Yes, there is." -> yes,
"No." -> no); otherwise a negation in the first sentence means no ("There is no red circle", "it isn't");
otherwise a "yes" anywhere means yes. Anything else is unparsable. POPE's own script counts every answer
without a negation as "yes"; here an unparsable answer is never counted as "yes" (so it cannot inflate the
yes-ratio): it is a wrong answer, a negative prediction for precision/recall, and reported as
``unparsable``.
"""
from __future__ import annotations

import re
from typing import Sequence

YES_WORDS = frozenset({"yes", "yeah", "yep", "true", "correct"})
NO_WORDS = frozenset({"no", "nope", "false", "incorrect"})
NEGATIONS = frozenset({"no", "not", "none", "nothing", "nowhere", "never"})
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"[.!?\n]")


def parse_yes_no(text: str) -> str | None:
    """"yes", "no", or None when the answer says neither."""
    words = _WORD.findall(text.lower())
    if not words:
        return None
    if words[0] in YES_WORDS:
        return "yes"
    if words[0] in NO_WORDS:
        return "no"
    first = _WORD.findall(_SENTENCE_END.split(text.lower().strip(), maxsplit=1)[0])
    if any(w in NEGATIONS or w.endswith("n't") for w in first):
        return "no"
    if "yes" in words:
        return "yes"
    return None


def yes_no_metrics(predicted: Sequence[str | None], reference: Sequence[str]) -> dict[str, float | int]:
    """Metrics over parsed answers (``None`` = unparsable) against "yes"/"no" references."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    tp = sum(p == "yes" and r == "yes" for p, r in zip(predicted, reference))
    fp = sum(p == "yes" and r == "no" for p, r in zip(predicted, reference))
    fn = sum(p != "yes" and r == "yes" for p, r in zip(predicted, reference))
    correct = sum(p == r for p, r in zip(predicted, reference))
    n = len(reference)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": correct / n if n else 0.0, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": sum(p == "yes" for p in predicted) / n if n else 0.0,
            "unparsable": sum(p is None for p in predicted)}
