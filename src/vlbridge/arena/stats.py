"""Intervals over training seeds, and the paired comparison of a row with the reference row seed by seed.

Each seed trains a model once (initialisation and data order; data and encoder fixed) and scores it on the same
test records, so a row's scores over seeds are a sample of what the recipe gives. ``interval`` is the mean with
its two-sided 95% Student-t interval (with n = 3 seeds the half-width is 2.48 standard deviations) and the
min-max range. ``paired`` compares two rows on the seeds both have: the differences seed by seed, with their
own t interval; ``supported`` says whether that interval excludes zero, i.e. whether the seeds support the
difference at all. With one seed there is no interval and nothing is supported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import t as student_t

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    half: float | None          # half-width of the 95% t interval (None with fewer than 2 values)
    low: float                  # min over seeds
    high: float                 # max over seeds
    n: int

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.half is None else (self.mean - self.half, self.mean + self.half)


def interval(values: list[float]) -> Interval | None:
    """Mean, 95% t half-width and min-max of ``values`` (None when empty)."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    half = None
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = float(student_t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, half, min(values), max(values), n)


def paired(values: dict[int, float], reference: dict[int, float]) -> Interval | None:
    """Interval of ``values[s] - reference[s]`` over the seeds s both have."""
    seeds = sorted(set(values) & set(reference))
    return interval([values[s] - reference[s] for s in seeds])


def supported(diff: Interval | None) -> bool:
    """True when the seeds support a difference: its 95% interval excludes zero."""
    return diff is not None and diff.ci is not None and (diff.ci[0] > 0 or diff.ci[1] < 0)
