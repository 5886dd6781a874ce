"""Function-invocation traces in the format of the Azure Functions Invocation
Trace 2021 (``app,func,end_timestamp,duration``: an invocation starts at
end - duration, in seconds from the trace's start), and what the
autoscaling benchmark may do to one before replaying it: compress time and
replicate functions with shifted start times.  Pure: no I/O but the text
given, so the host transforms and dom0 replays the same schedule.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: The keep-alive FaaS platforms commonly give an idle instance, s (a replay
#: scales it by its speedup unless told otherwise).
PLATFORM_KEEP_ALIVE_S = 600.0

#: The columns a trace file must have (others are ignored).
COLUMNS = ("app", "func", "end_timestamp", "duration")

#: The longest replay the benchmark runs, s: the transformed trace's last
#: end plus the keep-alive (a week; a replay runs in real time).
MAX_REPLAY_S = 7 * 24 * 3600.0


class TraceError(ValueError):
    """A trace file that cannot be read, naming the file and line."""


@dataclass(frozen=True)
class Invocation:
    func: int           # index into Trace.functions
    start_s: float
    duration_s: float


@dataclass(frozen=True)
class Trace:
    """Functions ("app/func", in order of first appearance) and their
    invocations, by start time."""

    functions: tuple[str, ...]
    invocations: tuple[Invocation, ...]

    @property
    def span_s(self) -> float:
        """From the first start to the last end."""
        return self.end_s - self.first_s

    @property
    def first_s(self) -> float:
        """The first start."""
        return min((i.start_s for i in self.invocations), default=0.0)

    @property
    def end_s(self) -> float:
        """The last end (from the trace's time 0)."""
        return max((i.start_s + i.duration_s for i in self.invocations), default=0.0)

    @property
    def period_s(self) -> float:
        """The period the trace repeats with when a replica wraps round: its
        span; but one mean gap between starts longer if an invocation starts
        at the span's very end (to within float rounding: a last invocation
        of no duration), which would otherwise land on the first start; 1 s
        if the span is 0."""
        span = self.span_s
        if not self.invocations or span <= 0:
            return 1.0
        end, last = self.end_s, max(i.start_s for i in self.invocations)
        if end - last > 1e-9 * max(1.0, end):
            return span
        return span + span / len(self.invocations)

    def describe(self) -> dict[str, Any]:
        return {"functions": len(self.functions), "invocations": len(self.invocations),
                "span_s": round(self.span_s, 3),
                "busy_s": round(sum(i.duration_s for i in self.invocations), 3)}


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{where}: {what} {text!r} must be a finite number >= 0")
    return value


def decode_trace(data: bytes, source: str = "trace") -> str:
    """The text of a trace file's ``data``, which must be UTF-8 (a byte-order
    mark is kept: parse_trace() drops it); TraceError naming ``source`` and
    the line otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}: "
                         f"{exc.reason})") from None


def _blank(row: list[str]) -> bool:
    return not row or row == [""]


def _rows(reader: Any, source: str) -> Iterator[tuple[int, list[str]]]:
    """Each row of the CSV ``reader`` with the line it ends on; TraceError
    naming ``source`` and the line for what the csv module cannot read (a
    field over its size limit, a NUL)."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TraceError(f"{source}:{reader.line_num}: not a CSV row: {exc}") from None
        yield reader.line_num, row


def parse_trace(text: str, source: str = "trace") -> Trace:
    """The trace in ``text`` (CSV with a header naming COLUMNS); TraceError
    naming ``source`` and the line of the first bad row.  Blank lines are
    skipped, before the header as after it; a leading byte-order mark is
    dropped."""
    reader = _rows(csv.reader(io.StringIO(text.removeprefix("\ufeff"))), source)
    try:
        line, header = next((n, row) for n, row in reader if not _blank(row))
    except StopIteration:
        raise TraceError(f"{source}: empty, expected a header {','.join(COLUMNS)}") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise TraceError(f"{source}:{line}: header {','.join(header)!r} lacks "
                         f"{', '.join(missing)} (expected {','.join(COLUMNS)})")
    for c in COLUMNS:
        columns = [n + 1 for n, name in enumerate(header) if name == c]
        if len(columns) > 1:
            raise TraceError(f"{source}:{line}: header names {c} {len(columns)} times "
                             f"(columns {', '.join(map(str, columns))})")
    col = {c: header.index(c) for c in COLUMNS}
    functions: dict[str, int] = {}
    invocations = []
    for line, row in reader:
        where = f"{source}:{line}"
        if _blank(row):
            continue
        if len(row) != len(header):
            raise TraceError(f"{where}: {len(row)} fields, the header has {len(header)}")
        app, func = row[col["app"]].strip(), row[col["func"]].strip()
        if not app or not func:
            raise TraceError(f"{where}: empty app or func")
        end = _number(row[col["end_timestamp"]], "end_timestamp", where)
        duration = _number(row[col["duration"]], "duration", where)
        if duration > end + 1e-6:
            raise TraceError(f"{where}: duration {duration} is longer than end_timestamp "
                             f"{end}: the invocation would start before the trace")
        name = f"{app}/{func}"
        index = functions.setdefault(name, len(functions))
        invocations.append(Invocation(index, max(0.0, end - duration), duration))
    if not invocations:
        raise TraceError(f"{source}: no invocations")
    invocations.sort(key=lambda i: (i.start_s, i.func))
    return Trace(tuple(functions), tuple(invocations))


@dataclass(frozen=True)
class Transform:
    """What the benchmark does to a trace: time moved so that the first
    start is at 0 (the replay's clock starts there: an excerpt from late in a
    long trace would otherwise wait for hours); ``replicas`` copies of every
    function, copy 0 the trace itself; copy k > 0 shifted by its own random
    offset in [0, period) (seeded), wrapping round within [0, period), so
    that its starts keep their cyclic order and none lands on another's
    time.  The period is the span (first start to last end), a little
    longer only when an invocation starts at the span's very end
    (Trace.period_s).  Then time divided by ``speedup`` (start times and
    durations alike)."""

    speedup: float = 1.0
    replicas: int = 1
    seed: int = 0

    def check(self) -> None:
        if not (math.isfinite(self.speedup) and self.speedup > 0):
            raise ValueError(f"speedup must be a number > 0, got {self.speedup!r}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas!r}")

    def apply(self, trace: Trace) -> Trace:
        self.check()
        rng = random.Random(self.seed)
        period = trace.period_s
        first = trace.first_s
        functions = []
        invocations = []
        for k in range(self.replicas):
            offset = 0.0 if k == 0 else rng.uniform(0, period)
            base = k * len(trace.functions)
            functions += [f if k == 0 else f"{f}#{k}" for f in trace.functions]
            for i in trace.invocations:
                # exact for copy 0: i.start_s - first < period
                start = (i.start_s - first + offset) % period
                invocations.append(Invocation(base + i.func, start / self.speedup,
                                              i.duration_s / self.speedup))
        invocations.sort(key=lambda i: (i.start_s, i.func))
        return Trace(tuple(functions), tuple(invocations))

    def describe(self, before: Trace, after: Trace) -> dict[str, Any]:
        """What was done, for the results file."""
        return {"speedup": self.speedup, "replicas": self.replicas, "seed": self.seed,
                "shifted_by_s": round(-before.first_s, 3) + 0.0,    # never -0.0
                "replica_offsets": "uniform in [0, period), wrapping within [0, period)",
                "period_s": round(before.period_s, 3),
                "before": before.describe(), "after": after.describe()}
