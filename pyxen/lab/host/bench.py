"""The boot-storm benchmark, host side: for each variant, build, boot, run the
dom0 driver (pyxen.lab.dom0.dom0bench), and report stock vs the others in one run."""

from __future__ import annotations

import json
import logging
import math
import statistics
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pyxen import limits
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.requests import StormRequest
from pyxen.lab.contract.xenprof import background_scrubbed, domctl_retries_per_op
from pyxen.lab.host import figures, paths, variants
from pyxen.lab.host.benchfile import (BENCH_FORMAT, load_bench, saved_bench,
                                      write_storm_sections)
from pyxen.lab.host.progress import TABLE_WIDTH, console, say
from pyxen.lab.host.provenance import describe_build
from pyxen.lab.host.sources import XenSource
from pyxen.lab.host.storm_summary import (finite, format_ratio, ratio_to_stock, repeat_of,
                                          summarise)
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild, build

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchParams:
    guests: int
    concurrency: tuple[int, ...]
    memory_mib: int = 16
    driver: str = protocol.STORM_DRIVER_DEFAULT  # protocol.STORM_DRIVERS
    repeat: int = 1         # rounds of every variant's storms, one boot each
    running: int = 0        # other idle guests up through each storm
    trace_timed: bool = False   # the timed storm traced too (StormRequest.trace_timed)

    def validate(self) -> None:
        if self.guests < 1:
            raise ValueError(f"--guests must be >= 1, got {self.guests}")
        if not self.concurrency:
            raise ValueError("--concurrency needs at least one value")
        for c in self.concurrency:
            if c < 1:
                raise ValueError(f"--concurrency must be >= 1, got {c}")
            if c > self.guests:
                raise ValueError(f"--concurrency ({c}) exceeds --guests ({self.guests})")
        if self.repeat < 1:
            raise ValueError(f"--repeat must be >= 1, got {self.repeat}")
        # The rest is the storm requests' to check (memory, driver).
        self.request(self.concurrency[0], Path("/"))

    def guests_mib(self) -> int:
        """Memory the storm's guests and the running ones take at most, MiB."""
        return (self.guests * self.memory_mib
                + self.running * (self.memory_mib + protocol.GUEST_OVERHEAD_MIB))

    def request(self, concurrency: int, kernel: Path) -> StormRequest:
        """What dom0bench is asked for the storm at ``concurrency``."""
        return StormRequest(guests=self.guests, concurrency=concurrency, kernel=kernel,
                            memory_mib=self.memory_mib, driver=self.driver,
                            prefix=f"bench-c{concurrency}-", running=self.running,
                            trace_timed=self.trace_timed)


def run_storm(dom0: Dom0, request: StormRequest,
              on_poll: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """One storm in a booted dom0 through pyxen.lab.dom0.dom0bench: its
    result.json (``on_poll`` sees the command's output directory while it
    runs)."""
    res = dom0.run([sys.executable, "-m", "pyxen.lab.dom0.dom0bench",
                    "--request", request.to_json()],
                   timeout=(600 + 120 * request.guests
                            + protocol.running_guests_s(request.running)),
                   on_poll=on_poll)
    # Exit 1: the storm ran and its result reports errors or leftover domains;
    # 2: it broke off (a LabError here, naming what dom0bench printed).
    return res.json_file(protocol.RESULT_FILE, "the storm benchmark", ok_codes=(0, 1))


def run_variant(staged: StagedBuild, params: BenchParams, options: VMOptions,
                progress: Progress, name: str | None = None,
                repeat: int = 0) -> list[dict[str, Any]]:
    """Boot one variant and run one storm per concurrency in its dom0 (each
    starts from its own baseline); the bench.json run records, marked with
    the repetition ``repeat``."""
    guest = paths.tinyguest_path().absolute()
    if not guest.exists():
        raise LabError(f"tiny guest not built ({guest}): run \"pip install '.[lab]'\"")
    name = name or staged.variant.name
    records = []
    with Dom0(staged, options) as dom0:
        for conc in params.concurrency:
            total = params.guests * len(protocol.BENCH_PHASES)
            label = f"{name} C={conc}" + (f" #{repeat + 1}" if params.repeat > 1 else "")
            task = progress.add_task(label, total=total)

            def poll(out: Path, task: TaskID = task) -> None:
                try:
                    p = json.loads((out / protocol.PROGRESS_FILE).read_text())
                    base = params.guests * protocol.BENCH_PHASES.index(p["phase"])
                except (OSError, ValueError, KeyError):
                    return
                progress.update(task, completed=base + p["done"])

            result = run_storm(dom0, params.request(conc, guest), poll)
            progress.update(task, completed=total)
            if result["errors"]:
                log.warning("%s C=%d: %d errors, first: %s", name, conc,
                            len(result["errors"]), result["errors"][0])
            records.append({
                "variant": name,
                "repeat": repeat,
                **describe_build(staged),
                "profiled": staged.variant.profile,
                "xs_cache": options.xs_cache,
                **result,
            })
    return records


#: How bench.json states the projection (Karp-Flatt serial fraction, Amdahl).
PROJECTION_FORMULA = ("T(N) = T(1) * (e + (1 - e) / N), with e = (1/S - 1/p) / (1 - 1/p), "
                      "S = T(1) / T(p), T(C) the measured makespan at concurrency C and "
                      "p = min(C, Xen's pCPUs)")


def cpu_growth(runs: list[dict[str, Any]], k: int = 5) -> dict[str, dict[str, Any]]:
    """Where the growth of a create with N goes: for each C=1 run with
    ``cpu_s_each``, the median CPU seconds per create of each process (and
    of dom0, and the wall time) over creates 2..k+1 and over the last k,
    and their ratio."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        each = [e for e in (r.get("cpu_s_each") or [])[1:] if e is not None]
        if len(each) < 2 * k:
            continue
        first, last = each[:k], each[-k:]
        row: dict[str, Any] = {}
        for key in first[0]:
            a = statistics.median(e.get(key, 0.0) for e in first)
            b = statistics.median(e.get(key, 0.0) for e in last)
            row[key] = {"first_s": a, "last_s": b, "ratio": b / a if a else None}
        key = f"{r['variant']} guests={r['guests']}"
        out[key + (f" repeat={repeat_of(r)}" if repeat_of(r) else "")] = row
    return out


def project(runs: list[dict[str, Any]], cpus: int,
            cores: tuple[int, ...] = (16, 64)) -> dict[str, Any]:
    """Per variant: the serial fraction measured between C=1 and the largest
    C > 1 (median makespans over the repetitions), and the makespan it projects on more cores (a projection, not a
    measurement: these machines have ``cpus`` pCPUs under TCG)."""
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        by_c = {c: statistics.median(r["makespan_s"] for r in runs
                                     if r["variant"] == variant and r["concurrency"] == c)
                for c in {r["concurrency"] for r in runs if r["variant"] == variant}}
        multi = [c for c in by_c if c > 1]
        if 1 not in by_c or not multi or cpus < 2:
            continue
        c = max(multi)
        p = min(c, cpus)
        t1, tp = by_c[1], by_c[c]
        speedup = t1 / tp
        e = (1 / speedup - 1 / p) / (1 - 1 / p)
        e_clamped = min(1.0, max(0.0, e))
        out[variant] = {
            "from_concurrency": c, "p": p, "speedup": speedup,
            "serial_fraction": e,
            **{f"makespan_{n}_cores_s": t1 * (e_clamped + (1 - e_clamped) / n) for n in cores},
            "formula": PROJECTION_FORMULA,
        }
    return out


def same_build(a: StagedBuild, b: StagedBuild) -> bool:
    return a.hypervisor_key == b.hypervisor_key and a.tools_key == b.tools_key




def _variant_column(table: Table, runs: list[dict[str, Any]]) -> None:
    """The variant column, never truncated ("patched+cache" stays whole)."""
    table.add_column("variant", justify="right", no_wrap=True, overflow="fold",
                     min_width=max((len(r["variant"]) for r in runs), default=0))


def _ratios(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float, float]]:
    """Each run with its mean create time and its makespan's ratio to stock's
    at the same concurrency in the same repetition (NaN where not measured)."""
    out = []
    for r in runs:
        creates = finite(r["create_s"])
        mean = statistics.fmean(creates) if creates else float("nan")
        out.append((r, mean, ratio_to_stock(r, runs)))
    return out


def _add_notes(table: Table, notes: list[str]) -> None:
    for n in notes:
        table.caption = (table.caption + "\n" if table.caption else "") + n


def summary_table(runs: list[dict[str, Any]], notes: list[str], wide: bool = False) -> Table:
    """The runs side by side, ratio = variant / stock: the columns a reader
    compares variants by (fits TABLE_WIDTH columns), or with ``wide`` all."""
    if wide:
        return _wide_table(runs, notes)
    profiled = any(_retries_per_op(r, "create") is not None for r in runs)
    repeats = max((repeat_of(r) + 1 for r in runs), default=1)
    title = "boot storm: stock vs variants (ratio = variant / stock)"
    if repeats > 1:
        title += f", medians of {repeats} repetitions"
    running = _running_note(runs)
    if running:
        title += f", {running[0]} other guests running"
    table = Table(title=title)
    _variant_column(table, runs)
    cols = ["C", "makespan s", "ratio" + (" (range)" if repeats > 1 else ""),
            "create s", "xs req"]
    cols += ["retries"] if profiled else []
    cols += ["console", "errors"]
    for col in cols:
        table.add_column(col, justify="right", no_wrap=True)
    for row in summarise(runs, lambda r: _retries_per_op(r, "create")):
        cells = [row.variant, str(row.concurrency), f"{row.makespan_s:.2f}",
                 format_ratio(row),
                 "-" if row.create_mean_s is None else f"{row.create_mean_s:.3f}",
                 "-" if row.xs_requests_per_create is None
                 else f"{row.xs_requests_per_create:.1f}"]
        if profiled:
            cells.append("-" if row.retries_per_create is None
                         else f"{row.retries_per_create:.2f}")
        cells += [f"{row.console_ok}/{row.guests}", str(row.errors)]
        table.add_row(*cells)
    table.caption = ("create s: mean create time; xs req: requests per create reaching "
                     "xenstored" + ("; retries: domctl retries per create" if profiled
                                    else "") + " (--wide: all columns"
                     + (", every repetition" if repeats > 1 else "") + ")")
    _add_notes(table, notes + running[1:])
    return table


def _running_note(runs: list[dict[str, Any]]) -> list[str]:
    """[N, a line on xenstored's open files with the N up] when the storms
    ran beside N other guests (``--running``), else []."""
    count = max(((r.get("running") or {}).get("count", 0) for r in runs), default=0)
    if not count:
        return []
    fds: dict[str, str] = {}
    for r in runs:
        rn = r.get("running") or {}
        fds.setdefault(r["variant"], f"{rn.get('xenstored_fds_without')} -> "
                                     f"{rn.get('xenstored_fds_with')}")
    return [str(count), "xenstored's open files, none -> all running guests up: "
            + ", ".join(f"{v} {f}" for v, f in fds.items())]


def _wide_table(runs: list[dict[str, Any]], notes: list[str]) -> Table:
    table = Table(title="boot storm: stock vs variants (ratio = variant / stock)")
    _variant_column(table, runs)
    for col in ("driver", "rep", "guests", "conc", "makespan s", "ratio", "mean create s",
                "last/first create", "destroy s", "client xs req/create",
                "xs req/create (xenstored)", "domctl/create",
                "domctl retries/create", "lock wait ms/create", "xl lock wait s/create",
                "destroyed scrubbed meanwhile %", "console ok"):
        table.add_column(col, justify="right")
    for r, mean, ratio in _ratios(runs):
        creates = finite(r["create_s"])
        last_first = creates[-1] / creates[0] if len(creates) > 1 and creates[0] else float("nan")
        xs = r["xs_requests_per_create"]
        client = r.get("xs_client_requests_per_create")
        domctls = r.get("domctl_hypercalls_per_create")
        retries = _retries_per_op(r, "create")
        wait = r.get("lock_wait_s_per_create")
        xl_wait = r.get("xl_lock_wait_s_per_create")
        table.add_row(r["variant"], r["driver"], str(repeat_of(r) + 1), str(r["guests"]), str(r["concurrency"]),
                      f"{r['makespan_s']:.2f}", f"{ratio:.2f}", f"{mean:.3f}",
                      f"{last_first:.2f}", f"{r['destroy_makespan_s']:.2f}",
                      "-" if client is None else f"{client:.1f}",
                      "-" if xs is None else f"{xs:.1f}",
                      "-" if domctls is None else f"{domctls:.1f}",
                      "-" if retries is None else f"{retries:.2f}",
                      "-" if wait is None else f"{wait * 1e3:.3f}",
                      "-" if xl_wait is None else f"{xl_wait:.2f}",
                      _scrubbed_meanwhile(r),
                      f"{r['console_ok']}/{r['guests']}")
    _add_notes(table, notes)
    return table


def _scrubbed_meanwhile(r: dict[str, Any]) -> str:
    """The share of the destroyed guests' memory scrubbed in the background
    while they were destroyed (profiling builds with the lab's counter)."""
    pages = background_scrubbed(r.get("destroy_lock_profile"))
    total = r["guests"] * (r.get("memory_mib") or 0) * limits.PAGES_PER_MIB
    return "-" if pages is None or not total else f"{100 * pages / total:.0f}"


def print_summary(runs: list[dict[str, Any]], notes: list[str], wide: bool = False) -> None:
    """Print the summary table on stdout: at the terminal's width, or for a
    log file or pipe at TABLE_WIDTH (the wide table at its natural width)."""
    table = summary_table(runs, notes, wide)
    if sys.stdout.isatty():
        Console().print(table)
        return
    width = TABLE_WIDTH
    if wide:
        width = max(width, Console(width=1000).measure(table).maximum)
    Console(width=width).print(table)


def _scatter_against_running(ax: Any, runs: list[dict[str, Any]],
                             value: Callable[[dict[str, Any], int], float | None],
                             ylabel: str, title: str) -> None:
    """One point per create: ``value(run, i)`` against the domains already
    running when create i started (points, not a line: with C > 1 creates
    overlap, so no order joins them)."""
    keys = list(dict.fromkeys((r["variant"], r["concurrency"]) for r in runs))
    labelled: set[tuple[str, int]] = set()
    for r in runs:
        key = (r["variant"], r["concurrency"])
        pts = [(n, v) for i, n in enumerate(r["running_before_create"])
               if (v := value(r, i)) is not None]
        # one colour and one legend entry per variant and C, whatever the repetitions
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.75,
                   color=f"C{keys.index(key) % 10}",
                   label=None if key in labelled else f"{key[0]} (C={key[1]})")
        labelled.add(key)
    ax.set_xlabel("domains already running when the create started")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _xenstored_cpu(r: dict[str, Any], i: int) -> float | None:
    each = r["cpu_s_each"][i]
    return None if each is None else each.get("xenstored")


def _retries_per_op(r: dict[str, Any], phase: str) -> float | None:
    """Domctl retries per create or per destroy of one run, from its profile
    (runs saved before bench.json had the ``domctl_retries_per_*`` fields
    have the profiles)."""
    if phase == "create":
        return domctl_retries_per_op(r.get("lock_profile"), len(finite(r["create_s"])))
    return domctl_retries_per_op(r.get("destroy_lock_profile"), r["guests"])


def _plot_retries(ax: Any, runs: list[dict[str, Any]]) -> None:
    """Domctl retries per create (solid) and per destroy (dashed) against
    concurrency, per variant, on a symlog scale (0 to 10^5 in one panel)."""
    top = 0.0
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rs = sorted((r for r in runs if r["variant"] == variant),
                    key=lambda r: r["concurrency"])
        for phase, style in (("create", "-"), ("destroy", "--")):
            pts = [(r["concurrency"], v) for r in rs
                   if (v := _retries_per_op(r, phase)) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o",
                        label=f"{variant}, per {phase}")
                top = max(top, *(p[1] for p in pts))
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, max(10.0, top * 2))  # readable ticks when all are below 1
    ax.set_xlabel("operations in flight (C)")
    ax.set_ylabel("domctls retried (continuations)")
    ax.set_title("domctl lock retries")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Panels, left to right: each create's latency against the domains
    already running; boot-storm makespan against concurrency, per variant;
    (median and range over the repetitions); when a C=1 run measured it, xenstored's CPU time per create against the
    domains already running; for profiling builds (--profile), domctl
    retries per create and per destroy against concurrency."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_cpu = [r for r in runs if r.get("cpu_s_each")]
    profiled = any(_retries_per_op(r, "create") is not None for r in runs)
    n = 2 + bool(with_cpu) + profiled
    fig, axes = plt.subplots(1, n, figsize=(5.7 * n, 4.5))
    ax, ax2 = axes[0], axes[1]
    if with_cpu:
        _scatter_against_running(axes[2], with_cpu, _xenstored_cpu,
                                 "xenstored CPU per create (s)",
                                 "xenstored's CPU time per create")
    if profiled:
        _plot_retries(axes[-1], runs)
    _scatter_against_running(ax, runs, lambda r, i: r["create_s"][i],
                             "create latency (s)", "create latency vs running domains")

    rows = summarise(runs)
    for variant in dict.fromkeys(row.variant for row in rows):
        vs = sorted((row for row in rows if row.variant == variant),
                    key=lambda row: row.concurrency)
        ax2.errorbar([row.concurrency for row in vs], [row.makespan_s for row in vs],
                     yerr=[[row.makespan_s - row.makespan_min_s for row in vs],
                           [row.makespan_max_s - row.makespan_s for row in vs]],
                     marker="o", capsize=3, label=variant)
    ax2.set_ylim(bottom=0)  # from zero: differences here are mostly noise
    ax2.set_xlabel("creates in flight (C)")
    ax2.set_ylabel("makespan of the storm (s)")
    ax2.set_title(f"boot storm of {runs[0]['guests']} guests" if runs else "boot storm")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize="small")
    figures.save(fig, path)


def run_bench(run_variants: list[variants.RunVariant], params: BenchParams,
              options: VMOptions, out_dir: Path, series: Path | None = None,
              debug: bool = False, profile: bool = False,
              source: XenSource | None = None, wide: bool = False,
              named_series: Mapping[str, Path] | None = None) -> dict[str, Any]:
    """Build each variant (on ``source``, default the one the user named),
    run the storm on each (``params.repeat`` rounds of every variant in
    turn, each a fresh boot, so drift of the host reaches all variants), write bench.json and bench.png, print the table
    (``wide``: all its columns); ``named_series`` holds the series of the
    patched@NAME variants."""
    params.validate()
    options.validate()
    saved_bench(out_dir)          # a bench.json it must not replace fails before any build
    # Every variant resolved (its series found) before the first build.
    resolved = {v: variants.resolve(v.build, series, debug, profile, source, named_series)
                for v in run_variants}
    builds = {v: build(r) for v, r in resolved.items()}
    notes: list[str] = []
    stock = builds.get(variants.RunVariant("stock"))
    if stock is not None:
        for v, b in builds.items():
            if v.build != "stock" and same_build(b, stock):
                notes.append(f"note: '{v.name}' is identical to stock (its series is empty): "
                             "differences are run-to-run noise")
    runs = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(), console=console()) as progress:
        for rep in range(params.repeat):
            for v in run_variants:
                runs.extend(run_variant(builds[v], params,
                                        v.vm_options(options),
                                        progress, name=v.name, repeat=rep))
    doc: dict[str, Any] = {
        "format": BENCH_FORMAT,
        "runs": runs,
        "summary": [row.as_json() for row in summarise(
            runs, lambda r: _retries_per_op(r, "create"))],
        "repeat": params.repeat,
        "running": params.running,
        "notes": notes,
        "projection": project(runs, options.cpus),
        "cpu_growth": cpu_growth(runs),
        "vm": options.record(),
    }
    # What other commands added to a bench.json there (scrubbench's
    # birth_after_death section) is kept; the storm's own sections are new.
    doc, written, png = write_storm_sections(out_dir, doc, "bench.png")
    plot(runs, png)
    print_summary(runs, notes, wide)
    say(f"wrote {written} and {png}")
    return doc


#: What every storm run record holds that the table and the plot read, by
#: type (every bench.json this pyxen wrote has them, format 1 too).
RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "variant": str, "driver": str, "guests": int, "concurrency": int,
    "makespan_s": (int, float), "destroy_makespan_s": (int, float), "console_ok": int,
    "create_s": list, "running_before_create": list,
    "xs_requests_per_create": (int, float, type(None)),
}


def check_runs(path: Path, runs: list[Any]) -> None:
    """LabError naming ``path``, the run and what is wrong when a storm run
    record lacks what the table and the plot read (a hand-edited or foreign
    file), instead of a KeyError from deep in them."""
    for i, r in enumerate(runs):
        if not isinstance(r, dict):
            raise LabError(f"{path}: runs[{i}] is {type(r).__name__}, not a run record "
                           "(a JSON object)")
        for key, kind in RUN_FIELDS.items():
            if key not in r:
                raise LabError(f"{path}: runs[{i}] has no {key!r}: not a storm run "
                               "'python -m pyxen.lab bench' wrote")
            if not isinstance(r[key], kind) or isinstance(r[key], bool):
                raise LabError(f"{path}: runs[{i}] {key!r} is {r[key]!r}, of the wrong type")
        for key, ok in (("create_s", _is_time), ("running_before_create", _is_count)):
            bad = [v for v in r[key] if not ok(v)]
            if bad:
                raise LabError(f"{path}: runs[{i}] {key!r} holds {bad[0]!r}, of the wrong type")
        if len(r["create_s"]) < len(r["running_before_create"]):
            raise LabError(f"{path}: runs[{i}] has fewer create_s than running_before_create")


def _is_time(v: Any) -> bool:
    """A create's time in a saved run: seconds, or None for a create that failed."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v) and v >= 0)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def replot(bench_json: Path, out: Path | None = None, wide: bool = False) -> Path:
    """Redraw a saved run's plot (``bench.png`` next to it unless ``out``)
    and print its table (``wide``: all its columns): for runs saved before a
    panel existed (any bench.json format this pyxen reads: benchfile)."""
    doc = load_bench(bench_json)
    runs = doc["runs"]
    check_runs(bench_json, runs)
    target = out or bench_json.with_name("bench.png")
    plot(runs, target)
    print_summary(runs, list(doc.get("notes", [])), wide)
    return target
