"""Percentiles and the across-repetitions spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def summary(values: Iterable[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "mean": statistics.fmean(values), "min": min(values),
            "max": max(values)}


def spread(per_rep: Sequence[float]) -> dict[str, Any]:
    """One figure measured once per repetition: its median, min and max across repetitions."""
    values = [float(v) for v in per_rep if v is not None and not math.isnan(v)]
    if not values:
        return {"n": 0, "median": math.nan, "min": math.nan, "max": math.nan, "values": []}
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def sane(value: Any) -> bool:
    """A figure a benchmark may report: a positive, finite number."""
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
