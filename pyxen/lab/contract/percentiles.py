"""Nearest-rank percentiles, as every benchmark's results give them."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """count, p50, p90, p99 and max of ``values`` (None for each when empty)."""
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    v = sorted(values)

    def pct(p: float) -> float:      # nearest rank
        return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))]

    return {"count": len(v), "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": v[-1]}
