"""Boot-storm runs summarised across repetitions: one row per variant and
concurrency, with each variant's makespan ratio to stock's taken within the
same repetition (stock and the variant booted back to back), then the median
and range of those ratios over the repetitions."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


def repeat_of(run: dict[str, Any]) -> int:
    """The repetition a run record belongs to (runs saved before bench.json
    had repetitions are repetition 0)."""
    return int(run.get("repeat", 0))


def finite(xs: list[float | None]) -> list[float]:
    """The measured values (a failed create or destroy is recorded as None)."""
    return [x for x in xs if x is not None and math.isfinite(x)]


def ratio_to_stock(run: dict[str, Any], runs: list[dict[str, Any]]) -> float:
    """This run's makespan over stock's at the same concurrency in the same
    repetition (NaN when that stock run is missing)."""
    for s in runs:
        if (s["variant"] == "stock" and s["concurrency"] == run["concurrency"]
                and repeat_of(s) == repeat_of(run)):
            return float(run["makespan_s"] / s["makespan_s"])
    return float("nan")


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass(frozen=True)
class StormRow:
    """One variant at one concurrency over all repetitions."""

    variant: str
    concurrency: int
    repeats: int
    makespan_s: float                 # median over repetitions
    makespan_min_s: float
    makespan_max_s: float
    ratio: float | None               # median of the per-repetition ratios to stock
    ratio_min: float | None
    ratio_max: float | None
    create_mean_s: float | None       # median over repetitions of each one's mean create
    xs_requests_per_create: float | None
    retries_per_create: float | None  # median domctl retries per create (profiling builds)
    guests: int                       # guests over all repetitions
    console_ok: int
    errors: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def summarise(runs: list[dict[str, Any]],
              retries: Callable[[dict[str, Any]], float | None] = lambda r: None,
              ) -> list[StormRow]:
    """One row per (variant, concurrency), in the order the runs name them;
    ``retries`` gives a run's domctl retries per create, where measured."""
    keys = list(dict.fromkeys((r["variant"], r["concurrency"]) for r in runs))
    rows = []
    for variant, conc in keys:
        rs = [r for r in runs if r["variant"] == variant and r["concurrency"] == conc]
        spans = [float(r["makespan_s"]) for r in rs]
        ratios = [x for r in rs if not math.isnan(x := ratio_to_stock(r, runs))]
        means = [statistics.fmean(c) for r in rs if (c := finite(r["create_s"]))]
        xs = [float(r["xs_requests_per_create"]) for r in rs
              if r.get("xs_requests_per_create") is not None]
        rows.append(StormRow(
            variant=variant, concurrency=conc, repeats=len(rs),
            makespan_s=statistics.median(spans), makespan_min_s=min(spans),
            makespan_max_s=max(spans), ratio=_median(ratios),
            ratio_min=min(ratios) if ratios else None,
            ratio_max=max(ratios) if ratios else None,
            create_mean_s=_median(means), xs_requests_per_create=_median(xs),
            retries_per_create=_median([n for r in rs if (n := retries(r)) is not None]),
            guests=sum(int(r["guests"]) for r in rs),
            console_ok=sum(int(r["console_ok"]) for r in rs),
            errors=sum(len(r.get("errors") or []) for r in rs)))
    return rows


def format_ratio(row: StormRow) -> str:
    """``0.61`` for one repetition, ``0.61 (0.55-0.70)`` for several, ``-``
    without a stock run to compare with."""
    if row.ratio is None:
        return "-"
    if row.repeats > 1 and row.ratio_min is not None and row.ratio_max is not None:
        return f"{row.ratio:.2f} ({row.ratio_min:.2f}-{row.ratio_max:.2f})"
    return f"{row.ratio:.2f}"
