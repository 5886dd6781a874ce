"""Host side of the Xenstore latency benchmark (``python -m pyxen.lab
xsbench``): boot each variant, run pyxen.lab.dom0.xslatency in its dom0
(read latency while N idle connections are open, optionally write latency
too), and report each variant's growth with N and its ratio to stock, in
the same run.  A ``+cache`` variant's clients go through the caching proxy:
its rows give what a request costs with the proxy in the path, the proxy's
system calls beside xenstored's."""

from __future__ import annotations

import json
import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from pyxen.lab.contract import protocol
from pyxen.lab.contract.requests import XsLatencyRequest
from pyxen.lab.host import figures
from pyxen.lab.host.benchfile import failed_runs_error, prepare_out, write_results
from pyxen.lab.host.each_variant import run_each
from pyxen.lab.host.variants import RunVariant
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild

log = logging.getLogger(__name__)

#: xsbench.json's format; readers refuse a newer one.
XSBENCH_FORMAT = 1
#: Its file in ``--out``, and its "kind".
XSBENCH_JSON = "xsbench.json"
XSBENCH_KIND = "xsbench"


@dataclass(frozen=True)
class XsParams:
    """What the user chooses of a run; each variant's dom0 gets it as an
    XsLatencyRequest (see there what each field means)."""

    idle: tuple[int, ...] = protocol.XS_IDLE_DEFAULT
    reads: int = protocol.XS_READS_DEFAULT
    rounds: int = protocol.XS_ROUNDS_DEFAULT
    syscall_reads: int = protocol.XS_SYSCALL_READS_DEFAULT
    writes: int = 0
    misses: int = 0

    def request(self) -> XsLatencyRequest:
        return XsLatencyRequest(idle=self.idle, reads=self.reads, rounds=self.rounds,
                                syscall_reads=self.syscall_reads, writes=self.writes,
                                misses=self.misses)

    def validate(self) -> None:
        """ValueError naming a bad field: the request checks every one."""
        self.request()


def run_latency(dom0: Dom0, request: XsLatencyRequest) -> dict[str, Any]:
    """One run of the dom0 driver in a booted dom0: its result.json."""
    points = len(request.idle) * request.rounds
    # A miss needs its node made first: two requests.
    per_point = request.reads + 2 * request.misses + request.writes
    strace_kinds = 1 + 2 * bool(request.misses) + bool(request.writes)
    reads = (points * per_point
             + len(request.idle) * request.syscall_reads * strace_kinds)
    res = dom0.run([sys.executable, "-m", "pyxen.lab.dom0.xslatency",
                    "--request", request.to_json()],
                   timeout=300 + 30 * len(request.idle) * (request.rounds + 1)
                   + reads * 0.05)
    # Exit 1: the run finished and its result lists errors.
    return res.json_file(protocol.RESULT_FILE, "the Xenstore latency benchmark", ok_codes=(0, 1))


@dataclass(frozen=True)
class Row:
    """One variant at one count of idle connections, medians over rounds."""

    variant: str
    idle: int
    read_us: float            # median over rounds of each round's median read
    read_us_all: list[float]  # each round's median read
    xenstored_us: float       # xenstored's CPU per read, median over rounds
    growth: float | None      # read over the same round's with the fewest idle
                              # connections, median over rounds
    cpu_growth: float | None  # the same for xenstored's CPU per read
    vs_stock: float | None    # read_us / stock's at the same count
    syscalls: float | None    # xenstored's system calls per read (strace -c)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ratio(a: float, b: float | None) -> float | None:
    return round(a / b, 3) if b else None


def _growth(points: list[dict[str, Any]], n: int, base: int, key: str) -> float | None:
    """Median over rounds of a round's ``key`` at ``n`` idle connections
    over the same round's at ``base``: each round's own baseline, so that
    drift of the VM between rounds cancels."""
    by_round: dict[int, dict[int, float]] = {}
    for p in points:
        by_round.setdefault(p["round"], {})[p["idle"]] = p[key]
    ratios = [r[n] / r[base] for r in by_round.values() if n in r and r.get(base)]
    return round(statistics.median(ratios), 3) if ratios else None


@dataclass(frozen=True)
class RequestRow:
    """One variant, count of idle connections and kind of request ("read",
    "miss", "write"): what it cost each server, medians over rounds.  Only
    for runs that timed misses or writes or went through the proxy."""

    variant: str
    idle: int
    request: str
    us: float                        # the client's time per request
    xenstored_us: float              # xenstored's CPU per request
    proxy_us: float | None           # the proxy's CPU per request (None: no proxy)
    syscalls: float | None           # xenstored's system calls per request
    proxy_syscalls: float | None     # the proxy's

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _figures(record: dict[str, Any], request: str) -> dict[str, Any] | None:
    """A point's or a strace pass's figures for ``request`` (the read's are
    the record's own)."""
    return record if request == "read" else record.get(request)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def request_rows(runs: list[dict[str, Any]]) -> list[RequestRow]:
    """The second table's rows (variants in run order, counts ascending,
    requests in protocol.XS_REQUESTS' order); empty when no run timed misses
    or writes or went through the proxy."""
    if not any(p.get("miss") or p.get("write") or "proxy_hits" in p
               for run in runs for p in run["points"]):
        return []
    rows = []
    for run in runs:
        counts = {c["idle"]: c for c in run.get("syscalls", [])}
        for n in sorted({p["idle"] for p in run["points"]}):
            pts = [p for p in run["points"] if p["idle"] == n]
            for request in protocol.XS_REQUESTS:
                figs = [f for p in pts if (f := _figures(p, request))]
                if not figs:
                    continue
                count = _figures(counts[n], request) if n in counts else None
                proxy = count.get("proxy") if count else None
                rows.append(RequestRow(
                    variant=run["variant"], idle=n, request=request,
                    us=statistics.median(f["us_median"] for f in figs),
                    xenstored_us=statistics.median(f["xenstored_cpu_us_per_read"]
                                                   for f in figs),
                    proxy_us=_median([f.get("proxy_cpu_us_per_read") for f in figs]),
                    syscalls=count["total_per_read"] if count else None,
                    proxy_syscalls=proxy["total_per_read"] if proxy else None))
    return rows


def summarise(runs: list[dict[str, Any]]) -> list[Row]:
    """Rows per variant (in run order) and idle count (ascending)."""
    by: dict[str, dict[int, list[dict[str, Any]]]] = {}
    calls: dict[tuple[str, int], float] = {}
    for run in runs:
        for p in run["points"]:
            by.setdefault(run["variant"], {}).setdefault(p["idle"], []).append(p)
        for c in run.get("syscalls", []):
            calls[run["variant"], c["idle"]] = c["total_per_read"]
    medians = {v: {n: statistics.median(p["us_median"] for p in pts)
                   for n, pts in counts.items()}
               for v, counts in by.items()}
    rows = []
    for v, counts in by.items():
        base = min(counts)
        points = [p for pts in counts.values() for p in pts]
        for n in sorted(counts):
            stock = medians.get("stock", {}).get(n)
            rows.append(Row(
                variant=v, idle=n, read_us=medians[v][n],
                read_us_all=[p["us_median"] for p in counts[n]],
                xenstored_us=statistics.median(p["xenstored_cpu_us_per_read"]
                                               for p in counts[n]),
                growth=_growth(points, n, base, "us_median"),
                cpu_growth=_growth(points, n, base, "xenstored_cpu_us_per_read"),
                vs_stock=None if stock is None or v == "stock"
                else _ratio(medians[v][n], stock),
                syscalls=calls.get((v, n))))
    return rows


def _fmt(x: float | None, suffix: str = "x") -> str:
    return "-" if x is None else f"{x:.2f}{suffix}"


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def summary_table(rows: list[Row]) -> Table:
    """The printed table (within 100 columns)."""
    t = Table(title="Xenstore read against idle connections (medians over rounds; "
                    "'vs fewest': within each round)")
    for name in ("variant", "idle", "read µs", "vs fewest", "vs stock",
                 "xenstored µs/read", "vs fewest", "syscalls"):
        t.add_column(name, justify="left" if name == "variant" else "right",
                     no_wrap=True)
    for r in rows:
        t.add_row(r.variant, str(r.idle), f"{r.read_us:.0f}", _fmt(r.growth),
                  _fmt(r.vs_stock), f"{r.xenstored_us:.0f}", _fmt(r.cpu_growth),
                  _fmt(r.syscalls, ""))
    return t


def request_table(rows: list[RequestRow]) -> Table:
    """The second table: each kind of request's cost to each server."""
    t = Table(title="Each request's cost to each server (medians over rounds; calls: "
                    "system calls per request, strace -c; read: through the proxy, a hit; "
                    "miss: a node not read before; write: the node's own value)")
    for name in ("variant", "idle", "request", "µs", "xenstored CPU µs", "proxy CPU µs",
                 "xenstored calls", "proxy calls"):
        t.add_column(name, justify="left" if name in ("variant", "request") else "right",
                     no_wrap=name == "variant")
    for r in rows:
        t.add_row(r.variant, str(r.idle), r.request, f"{r.us:.0f}", f"{r.xenstored_us:.0f}",
                  _us(r.proxy_us), _fmt(r.syscalls, ""), _fmt(r.proxy_syscalls, ""))
    return t


def plot(rows: list[Row], target: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for v in dict.fromkeys(r.variant for r in rows):
        mine = [r for r in rows if r.variant == v]
        ax1.plot([r.idle for r in mine], [r.read_us for r in mine], "o-", label=v)
        ax2.plot([r.idle for r in mine], [r.xenstored_us for r in mine], "o-", label=v)
    ax1.set(xlabel="idle connections", ylabel="read latency, µs (median)",
            title="client's read")
    ax2.set(xlabel="idle connections", ylabel="xenstored CPU per read, µs",
            title="xenstored's share")
    for ax in (ax1, ax2):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    figures.save(fig, target, "Nested Xen under TCG: compare variants and counts, not absolute times")


def run_xs_bench(builds: list[tuple[RunVariant, StagedBuild]], params: XsParams,
                 options: VMOptions, out_dir: Path) -> dict[str, Any]:
    """Boot each built variant in turn, run the driver, write
    ``xsbench.json`` and ``xsbench.png`` in ``out_dir``, print the table.

    A variant whose run fails (its driver reports errors, or its VM does not
    come up) does not stop the others: every run is written with its errors,
    the summary covers the runs without errors, and then LabError names the
    failed variants.  When every variant failed, the runs go to
    ``xsbench.failed.json`` and an earlier ``xsbench.json`` is kept."""
    params.validate()
    options.validate()
    request = params.request()
    prepare_out(out_dir, XSBENCH_JSON, XSBENCH_KIND)
    runs = run_each(builds, options, "Xenstore latency",
                    lambda dom0: run_latency(dom0, request), {"points": [], "syscalls": []})
    for r in runs:
        if r["errors"]:
            log.warning("%s: the Xenstore latency run failed: %s", r["variant"],
                        "; ".join(r["errors"]))
    failed = [r for r in runs if r["errors"]]
    good = [r for r in runs if not r["errors"]]
    rows = summarise(good)
    by_request = request_rows(good)
    doc = {
        "format": XSBENCH_FORMAT,
        "kind": XSBENCH_KIND,
        "request": json.loads(request.to_json()),
        "runs": runs,
        "summary": [r.as_json() for r in rows],
        "requests": [r.as_json() for r in by_request],
        "vm": options.record(),
    }
    written = write_results(out_dir, XSBENCH_JSON, doc, lambda png: plot(rows, png),
                            "xsbench.png", summary_table(rows),
                            *([request_table(by_request)] if by_request else []),
                            any_good=bool(good))
    if failed:
        raise failed_runs_error("the Xenstore latency run", failed, written)
    return doc
