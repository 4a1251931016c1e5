"""Turning picked (question, answer) pairs into LLaVA-style messages, and picking balanced yes/no answers."""

from __future__ import annotations

import random

from ..template import IMAGE_TOKEN
from .constants import BALANCED_TASKS, SHORT_ANSWER_SUFFIX, SHORT_ANSWER_TASKS
from .questions import QA

SENTENCE_SUFFIX = ":sentence"    # a turn's task name with this suffix: asked without the instruction, sentence answer


def prompt_for(task: str, question: str) -> str:
    """Question text as shown to the model (short-answer tasks get the suffix)."""
    return f"{question}\n{SHORT_ANSWER_SUFFIX}" if task in SHORT_ANSWER_TASKS else question


class YesNoBalancer:
    """Chooses the yes/no answer that keeps a task balanced over a split."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def pick(self, task: str, candidates: list[QA], rng: random.Random) -> QA:
        counts = self.counts.setdefault(task, {"yes": 0, "no": 0})
        if counts["yes"] == counts["no"]:
            order = rng.sample(["yes", "no"], 2)
        else:
            order = ["yes", "no"] if counts["yes"] < counts["no"] else ["no", "yes"]
        for answer in order:
            matching = [qa for qa in candidates if qa[1] == answer]
            if matching:
                counts[answer] += 1
                return rng.choice(matching)
        raise ValueError(f"no yes/no candidates for {task}")


def pick(task: str, candidates: list[QA], rng: random.Random, balancer: YesNoBalancer) -> QA:
    """One candidate: balanced by answer for the yes/no tasks, uniform otherwise."""
    if task in BALANCED_TASKS:
        return balancer.pick(task, candidates, rng)
    return rng.choice(candidates)


def conversation(turns: list[tuple[str, QA]], hint_once: bool = False) -> list[dict[str, str]]:
    """Human/gpt messages; ``hint_once``: only the first short-answer question carries the suffix."""
    messages: list[dict[str, str]] = []
    hinted = False
    for k, (task, (question, answer)) in enumerate(turns):
        text = question if hint_once and hinted else prompt_for(task, question)
        hinted = hinted or task in SHORT_ANSWER_TASKS
        if k == 0:
            text = f"{IMAGE_TOKEN}\n{text}"
        messages.append({"from": "human", "value": text})
        messages.append({"from": "gpt", "value": answer})
    return messages
