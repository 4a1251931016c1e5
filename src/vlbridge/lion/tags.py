"""Image tags as a prompt prefix: LION's tag sentence, its three modes, and tag noise for robustness tests.

The question of the turn that holds the image is prefixed with::

    According to <soft>, you are allowed to use or partially use the following tags: [red, circle, small].

where ``<soft>`` is ONE token whose embedding row is learned (``mode="soft"``); ``mode="hard"`` writes the same
sentence with plain words (``HARD_SOURCE``) in its place, and ``mode="none"`` leaves the question as it is.
``noisy_tags`` replaces each tag, with probability ``noise``, by a vocabulary tag the image does not have.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..config import opt
from ..data.template import IMAGE_TOKEN
from ..errors import UserError

SOFT_TOKEN = "<soft>"
HARD_SOURCE = "the image tagger"
TAG_SENTENCE = "According to {source}, you are allowed to use or partially use the following tags: [{tags}]. "
MODES = ("none", "hard", "soft")


@dataclass
class TagsConfig:
    mode: str = opt("soft", "how tags reach the question: 'none', 'hard' (the tag sentence in plain words) or 'soft' "
                            "(the sentence with one learned <soft> embedding)")
    noise: float = opt(0.0, "fraction of the tags replaced by wrong ones (tags the image does not have), to measure "
                            "robustness")
    threshold: float | None = opt(None, "tagger score threshold; None = the tagger's own (set when it was trained)")
    seed: int = opt(0, "seed of the noise draws (each record draws from seed and its id)")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"tags.mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 <= self.noise <= 1.0:
            raise UserError(f"tags.noise must be in [0, 1], got {self.noise}")


def tag_sentence(tags: list[str], mode: str) -> str:
    """The prefix for ``tags`` in ``mode`` ('' for 'none')."""
    if mode == "none":
        return ""
    if mode not in MODES:
        raise UserError(f"tag mode must be one of {MODES}, got {mode!r}")
    return TAG_SENTENCE.format(source=SOFT_TOKEN if mode == "soft" else HARD_SOURCE, tags=", ".join(tags))


def with_tags(question: str, tags: list[str], mode: str) -> str:
    """The question with the tag sentence in front of its text (after its image placeholders)."""
    sentence = tag_sentence(tags, mode)
    if not sentence:
        return question
    head, sep, text = question.rpartition(IMAGE_TOKEN)
    text_start = len(text) - len(text.lstrip("\n "))
    return head + sep + text[:text_start] + sentence + text[text_start:]


def noisy_tags(tags: list[str], true_tags: set[str], vocabulary: list[str], noise: float, rng: random.Random) -> list[str]:
    """Each tag replaced with probability ``noise`` by a vocabulary tag not in ``true_tags`` nor already listed."""
    out = list(tags)
    for i in range(len(out)):
        if rng.random() < noise:
            wrong = [t for t in vocabulary if t not in true_tags and t not in out]
            if wrong:
                out[i] = rng.choice(wrong)
    return out
