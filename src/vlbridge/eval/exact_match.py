"""Exact match after light normalisation (case, surrounding space, a trailing period)."""
from __future__ import annotations


def normalize(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))
