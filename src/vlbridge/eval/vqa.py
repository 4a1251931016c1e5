"""VQA accuracy with the official VQA answer normalisation.

``normalize_answer`` follows the rules of the VQA evaluation script (as also used by EvalAI and lmms-eval):

1. newlines and tabs become spaces, surrounding space is stripped;
2. punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a space (or when
   the text holds a thousands separator such as "1,000"), otherwise replaced by a space; a period is
   deleted unless a digit follows it ("3.5" keeps its point);
3. lowercase; number words "none", "zero" ... "ten" become digits; the articles "a", "an", "the" are dropped;
4. contractions written without their apostrophes ("dont", "couldnt've") get them back ("don't").
   Ordinary words that look like contractions ("were", "well", "its", "shed", "ill") are left alone, as
   in the official table.

``vqa_accuracy``: with 10 (or any k >= 2) human answers, min(#other humans that gave the answer / 3, 1)
averaged over the k leave-one-out subsets of k-1 annotators (the official formula); with a single
reference it is exact match after normalisation. Unlike the official script, which normalises only the
prediction (its ground truth was normalised when the dataset was built), both sides are normalised here,
as lmms-eval does, so references written by hand ("Two.") compare correctly.
"""
from __future__ import annotations

import re
from itertools import combinations
from typing import Sequence

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
_PERIOD = re.compile(r"\.(?!\d)")                 # a period not followed by a digit
_THOUSANDS = re.compile(r"\d,\d")

# Canonical contractions of the official table (its capital-I forms never match after lowercasing, so
# they are not listed).
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't shan't she'd've should've shouldn't shouldn't've "
    "somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd "
    "something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll "
    "they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd "
    "where's where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't "
    "wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _apostrophe_variants(word: str) -> list[str]:
    """Every spelling of ``word`` with at least one of its apostrophes dropped."""
    spots = [i for i, ch in enumerate(word) if ch == "'"]
    out = []
    for k in range(1, len(spots) + 1):
        for drop in combinations(spots, k):
            out.append("".join(ch for i, ch in enumerate(word) if i not in drop))
    return out


CONTRACTIONS: dict[str, str] = {v: c for c in _CONTRACTIONS for v in _apostrophe_variants(c)}


def strip_punctuation(text: str) -> str:
    out = text
    glue = _THOUSANDS.search(text) is not None
    for p in PUNCTUATION:
        touches_space = (p + " " in text) or (" " + p in text)
        out = out.replace(p, "" if touches_space or glue else " ")
    return _PERIOD.sub("", out)


def normalize_answer(text: str) -> str:
    text = strip_punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    if not references:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    pred = normalize_answer(prediction)
    refs = [normalize_answer(r) for r in references]
    if len(refs) == 1:
        return float(pred == refs[0])
    scores = []
    for left_out in range(len(refs)):
        matches = sum(r == pred for i, r in enumerate(refs) if i != left_out)
        scores.append(min(matches / 3.0, 1.0))
    return sum(scores) / len(scores)
