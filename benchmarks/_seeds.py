"""Statistics over seeds, shared by the studies that train several seeds per variant.

Torch-free, so that a sweep's parent process (which only starts workers) stays small.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); the deviation is nan with fewer than 2 values."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def exceeds_spread(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, bool]:
    """(mean(b) - mean(a), its standard error, whether |difference| > 2 standard errors).
    With one value on either side there is no spread: never "exceeds"."""
    diff = statistics.fmean(b) - statistics.fmean(a)
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, False
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return diff, se, abs(diff) > 2 * se
