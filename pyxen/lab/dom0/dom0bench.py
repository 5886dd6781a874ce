"""The boot-storm benchmark's dom0 side: create N tiny guests with at most C
creates in flight, check each printed its console line, destroy them, and
write what was measured as JSON.  Run by the host as
``python -m pyxen.lab.dom0.dom0bench --request JSON`` inside the lab's dom0,
JSON a pyxen.lab.contract.requests.StormRequest.

The storm runs twice.  The lab's xenstored keeps a request trace (``-T``),
from which Xenstore requests are counted; but 4.17's trace costs xenstored
a write(2) per byte of every request, and a line per running domain on every
pass of its main loop, so with it on a create's latency grows with the number
of domains for the trace's sake alone (64 guests at C=1 on Xen 4.17: makespan
73-89 s traced against 17-27 s untraced).  The first storm is therefore
timed with the trace switched off (``xenstore-control log off``), and the
second, traced, only counts requests; ``traced`` keeps that storm's times.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyxen.config import DomainConfig
from pyxen.errors import XenError
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError, describe
from pyxen.lab.contract.requests import StormRequest, parse_request
from pyxen.lab.contract.xenprof import GLOBAL_LOCKS, background_scrubbed, domctl_retries_per_op
from pyxen.lab.dom0 import tenants
from pyxen.lab.dom0.drivers import (CONSOLE_WAIT_S, DRIVERS, VANISH_WAIT_S, Driver,
                                     destroy_listed, wait_console, wait_vanished)
from pyxen.lab.dom0.proccpu import CpuSampler
from pyxen.lab.dom0.proxystats import ProxyCounter
from pyxen.lab.dom0.settle import SCRUB_SETTLE_S, settle_scrub
from pyxen.lab.dom0.xenprof import Profiler
from pyxen.lab.dom0.xllock import LockSampler, LockUse
from pyxen.lab.dom0.xstrace import (TraceReader, count_watch_events, requests_by_reach,
                                    trace_path, xs_trace_off)

class Progress:
    """Writes progress for the host to show (a small JSON file, replaced atomically)."""

    def __init__(self, out: Path, total: int) -> None:
        self.path = out / protocol.PROGRESS_FILE
        self.total = total
        self.done = 0
        self.phase = "create"
        self.lock = threading.Lock()

    def advance(self, phase: str) -> None:
        with self.lock:
            if phase != self.phase:
                self.phase, self.done = phase, 0
            self.done += 1
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"phase": phase, "done": self.done,
                                       "total": self.total}))
            tmp.rename(self.path)


def _lock_wait(profile: dict[str, Any] | None, ops: int) -> float | None:
    """Seconds spent waiting on the global locks (GLOBAL_LOCKS) per operation."""
    if not profile or not ops:
        return None
    wait: float = sum(profile["locks"].get(k, {}).get("blocked_s", 0.0) for k in GLOBAL_LOCKS)
    return wait / ops


#: Fields of a result that come from the traced storm (request counts).
COUNTED_FIELDS = ("xs_requests_per_create", "xs_requests_per_destroy", "xs_create_ops",
                  "xs_client_requests_per_create", "xs_client_requests_each",
                  "xs_cache_stats", "xs_requests_each", "xs_reads_each", "xs_watch_events",
                  "xs_create_reach")


def merge_passes(timed: dict[str, Any], counted: dict[str, Any]) -> dict[str, Any]:
    """One result from the two storms: times, CPU and profiles of the
    untraced one, request counts of the traced one; errors and leftover
    domains of both; the traced storm's own times under ``traced``."""
    result = dict(timed)
    for key in COUNTED_FIELDS:
        result[key] = counted[key]
    result["errors"] = list(timed["errors"]) + [f"counting storm: {e}"
                                                for e in counted["errors"]]
    if counted["console_ok"] < counted["guests"]:
        result["errors"].append(f"counting storm: {counted['console_ok']} of "
                                f"{counted['guests']} guests printed their line")
    result["leftover_domains"] = sorted(set(timed["leftover_domains"])
                                        | set(counted["leftover_domains"]))
    result["free_memory_mib_after"] = counted["free_memory_mib_after"]
    result["traced"] = {k: counted[k] for k in ("makespan_s", "create_s",
                                                "destroy_makespan_s", "cpu_s_each")}
    return result


def run(guests: int, concurrency: int, kernel: Path, memory_mib: int,
        prefix: str, workdir: Path, out: Path, driver: Driver,
        running: int = 0, trace_timed: bool = False) -> dict[str, Any]:
    """The timed storm (xenstored's trace off), then the counting storm
    (trace on), merged (module docstring); with ``running`` other idle
    guests up through both (pyxen.lab.dom0.tenants), under ``running``.
    With ``trace_timed`` the timed storm keeps the trace on too, and its
    own counts go under ``timed_counts``: what the first storm of a
    process does that the second does not (a cache's first watches)."""
    # Those a start that failed half-way created are destroyed too (stop
    # destroys every tenant name still listed).
    others = tenants.Tenants(names=tenants.names_for(prefix, running))
    try:
        others = tenants.start(driver, running, kernel, memory_mib, prefix, workdir,
                               storm_mib=guests * memory_mib)
        settled = settle_scrub(SCRUB_SETTLE_S)
        with contextlib.nullcontext() if trace_timed else xs_trace_off():
            timed = storm(guests, concurrency, kernel, memory_mib, prefix, workdir, out,
                          driver, protocol.BENCH_PHASES[:2])
        counted = storm(guests, concurrency, kernel, memory_mib, f"{prefix}n", workdir,
                        out, driver, protocol.BENCH_PHASES[2:])
    except BaseException as exc:
        try:
            left = tenants.stop(driver, others)
        except Exception as stop_exc:   # the storm's own error stays the one raised
            exc.add_note(f"clean-up: tenants: {describe(stop_exc)}")
            left = []
        for note in others.errors + ([f"clean-up: tenants left: {', '.join(left)}"]
                                     if left else []):
            exc.add_note(note)
        raise
    left = tenants.stop(driver, others)
    result = merge_passes(timed, counted)
    if trace_timed:
        result["timed_counts"] = {k: timed[k] for k in COUNTED_FIELDS}
    result["running"] = others.as_json()
    result["scrub_settle"] = settled
    result["errors"] += others.errors
    result["leftover_domains"] = sorted(set(result["leftover_domains"]) | set(left))
    return result


@dataclass
class Storm:
    """One storm's guests, and what its phases share: the driver, the
    instruments read around each phase, progress and the errors met."""

    guests: int
    concurrency: int
    memory_mib: int
    driver: Driver
    configs: list[DomainConfig]
    cfg_files: list[Path]
    trace: TraceReader
    proxy: ProxyCounter | None
    profiler: Profiler
    progress: Progress
    errors: list[str] = field(default_factory=list)

    def timed(self, phase: str, op: Callable[[int], None]) -> tuple[list[float | None], float]:
        """Run ``op(i)`` for every guest, at most ``concurrency`` at once; the
        seconds each took (None where xl failed) and the phase's makespan."""
        took: list[float | None] = [None] * self.guests

        def one(i: int) -> None:
            t0 = time.monotonic()
            try:
                op(i)
                took[i] = time.monotonic() - t0
            except (XenError, LabError) as exc:  # pyxen's errors, and xl's XlError
                self.errors.append(f"{phase} {self.configs[i].name}: {exc}")
            except Exception as exc:  # noqa: BLE001 - that guest's error; the others go on
                self.errors.append(f"{phase} {self.configs[i].name}: "
                                   f"{describe(exc)}")
            finally:
                self.progress.advance(phase)

        t_start = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(one, range(self.guests)))
        return took, time.monotonic() - t_start


@dataclass(frozen=True)
class Baseline:
    """dom0 before the storm."""

    free_memory_mib: int
    domains: set[str]


def prepare(guests: int, concurrency: int, kernel: Path, memory_mib: int, prefix: str,
            workdir: Path, out: Path, driver: Driver) -> tuple[Storm, Baseline]:
    """The guests' configs (written as xl config files too), dom0's baseline,
    and the instruments, started from now."""
    configs = [DomainConfig(name=f"{prefix}{i}", kernel=kernel, memory_mib=memory_mib)
               for i in range(guests)]
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_files = []
    for c in configs:
        path = workdir / f"{c.name}.cfg"
        path.write_text(c.to_xl_config())
        cfg_files.append(path)

    baseline = Baseline(free_memory_mib=driver.free_memory_mib(), domains=driver.names())
    trace = TraceReader(trace_path())
    proxy = ProxyCounter.from_env()
    profiler = Profiler()
    progress = Progress(out, guests)
    return Storm(guests, concurrency, memory_mib, driver, configs, cfg_files, trace, proxy,
                 profiler, progress), baseline


@dataclass
class Created:
    """What the create phase measured."""

    create_s: list[float | None]
    makespan_s: float
    running_before: list[int]
    #: Requests that reached xenstored during the phase, by operation.
    ops: Counter[str]
    #: What clients asked (through the proxy when there is one).
    client_requests: int
    profile: dict[str, Any] | None
    proxy_stats: dict[str, Any] | None
    #: xl's global create lock (xl driver only).
    xl_lock: LockUse | None
    #: C=1 only (else all None): each create's requests by operation, its
    #: client requests, and where its CPU time went.
    each_ops: list[dict[str, int] | None]
    each_client: list[int | None]
    each_cpu: list[dict[str, float] | None]
    #: C=1 only (else None): each connection's requests in the phase by what
    #: a cache of reads in that client could answer (xstrace.requests_by_reach).
    by_reach: list[dict[str, int]] | None = None


def add_each(phase_ops: Counter[str], each: list[dict[str, int] | None]) -> Counter[str]:
    """The phase's requests with those taken create by create (at C=1) added
    back: ``phase_ops`` holds only what was read after the last create."""
    for ops in each:
        if ops:
            phase_ops.update(ops)
    return phase_ops


def create_phase(s: Storm, phase: str) -> Created:
    """Create the guests, at most ``concurrency`` at once."""
    running = 0
    running_lock = threading.Lock()
    running_before = [0] * s.guests
    # At C=1 creates do not overlap, so each one's requests can be counted
    # alone: how they grow with the number of running domains.
    each: list[dict[str, int] | None] = [None] * s.guests
    each_client: list[int | None] = [None] * s.guests
    # ... and where each one's CPU time went (pyxen.lab.dom0.proccpu).
    cpu = CpuSampler() if s.concurrency == 1 else None
    each_cpu: list[dict[str, float] | None] = [None] * s.guests

    def create(i: int) -> None:
        nonlocal running
        with running_lock:
            running_before[i] = running
        cpu0 = cpu.sample() if cpu else None
        t0 = time.monotonic()
        s.driver.create(s.configs[i], s.cfg_files[i])
        if cpu and cpu0:
            each_cpu[i] = {**CpuSampler.delta(cpu0, cpu.sample()),
                           "wall": round(time.monotonic() - t0, 4)}
        if s.concurrency == 1:
            ops = dict(s.trace.take())
            each[i] = ops
            each_client[i] = s.proxy.take() if s.proxy else sum(ops.values())
        with running_lock:
            running += 1

    s.profiler.reset()
    if s.proxy:
        s.proxy.take()
    # A connection's transactions tell its reads apart only when they do not
    # overlap: at C=1.
    reach = TraceReader(trace_path()) if s.concurrency == 1 else None
    # xl's global create lock (autoballooning xl): sampled for both variants.
    xl_lock: LockUse | None = None
    if s.driver.name == "xl":
        with LockSampler() as sampler:
            create_s, makespan = s.timed(phase, create)
        xl_lock = sampler.use
    else:
        create_s, makespan = s.timed(phase, create)
    create_ops = add_each(s.trace.take(), each)
    by_reach = requests_by_reach(reach.take_text()) if reach else None
    profile = s.profiler.read()
    # What clients asked (through the proxy when there is one) against what
    # reached xenstored (its trace): equal without the proxy.
    client_requests = (sum(c for c in each_client if c is not None) + s.proxy.take()
                       if s.proxy else sum(create_ops.values()))
    proxy_stats = s.proxy.stats() if s.proxy else None
    return Created(create_s=create_s, makespan_s=makespan, running_before=running_before,
                   ops=create_ops, client_requests=client_requests, profile=profile,
                   proxy_stats=proxy_stats, xl_lock=xl_lock, each_ops=each,
                   each_client=each_client, each_cpu=each_cpu, by_reach=by_reach)


def console_phase(s: Storm) -> int:
    """How many guests printed their line (waiting up to CONSOLE_WAIT_S)."""
    console = wait_console([c.name for c in s.configs], CONSOLE_WAIT_S)
    s.trace.take()  # requests while waiting for consoles are nobody's create
    return sum(console.values())


@dataclass
class Destroyed:
    """What the destroy phase measured."""

    destroy_s: list[float | None]
    makespan_s: float
    ops: Counter[str]
    profile: dict[str, Any] | None


def destroy_phase(s: Storm, phase: str) -> Destroyed:
    """Destroy the guests, at most ``concurrency`` at once."""
    s.profiler.reset()
    destroy_s, makespan = s.timed(phase, lambda i: s.driver.destroy(s.configs[i].name))
    destroy_ops = s.trace.take()
    return Destroyed(destroy_s=destroy_s, makespan_s=makespan, ops=destroy_ops,
                     profile=s.profiler.read())


@dataclass(frozen=True)
class Aftermath:
    """dom0 after the storm: the guests still listed, and free memory."""

    leftover: set[str]
    free_memory_mib: int


def aftermath(s: Storm) -> Aftermath:
    leftover = wait_vanished(s.driver, {c.name for c in s.configs}, VANISH_WAIT_S)
    return Aftermath(leftover=leftover, free_memory_mib=s.driver.free_memory_mib())


def account(s: Storm, baseline: Baseline, created: Created, console_ok: int,
            destroyed: Destroyed, after: Aftermath) -> dict[str, Any]:
    """The storm's result (result.json's fields, merge_passes): per-create and
    per-destroy figures from the phases' records.  Pure: reads no instrument."""
    guests, concurrency = s.guests, s.concurrency
    profile, destroy_profile, xl_lock = created.profile, destroyed.profile, created.xl_lock
    each = created.each_ops
    n_created = sum(1 for t in created.create_s if t is not None)
    return {
        "driver": s.driver.name,
        "guests": guests,
        "concurrency": concurrency,
        "memory_mib": s.memory_mib,
        "makespan_s": created.makespan_s,
        "create_s": created.create_s,
        "running_before_create": created.running_before,
        "destroy_s": destroyed.destroy_s,
        "destroy_makespan_s": destroyed.makespan_s,
        "xs_requests_per_create": (sum(created.ops.values()) / n_created
                                   if n_created else None),
        "xs_requests_per_destroy": sum(destroyed.ops.values()) / guests if guests else None,
        "xs_create_ops": dict(created.ops),
        "xs_client_requests_per_create": (created.client_requests / n_created
                                          if n_created else None),
        "xs_client_requests_each": created.each_client if concurrency == 1 else None,
        "xs_cache_stats": created.proxy_stats,
        # C=1 only (else null): per create, each client connection's requests
        # by what a cache of reads in that client could answer ("cacheable":
        # reads of absolute paths outside transactions and domain paths;
        # "in_transaction"; "other"), busiest client first.
        "xs_create_reach": ([{k: v / n_created for k, v in c.items()} for c in created.by_reach]
                            if created.by_reach is not None and n_created else None),
        # C=1 only: requests of each create, in creation order (else null).
        "xs_requests_each": [sum(o.values()) if o is not None else None for o in each]
        if concurrency == 1 else None,
        "xs_reads_each": [o.get("READ", 0) if o is not None else None for o in each]
        if concurrency == 1 else None,
        # C=1 only: CPU seconds of each create by xenstored, xenconsoled, this
        # process (with xl children) and all of dom0, and its wall time.
        "cpu_s_each": created.each_cpu if concurrency == 1 else None,
        # Profiling builds only (--profile); null otherwise.
        "domctl_hypercalls_per_create": (profile["hypercalls"].get("domctl", 0) / n_created
                                         if profile and n_created else None),
        # Domctls entered again because a domctl lock was busy: from
        # the hypervisor series' counters, or stock's domctl_lock profile (else null).
        "domctl_retries_per_create": domctl_retries_per_op(profile, n_created),
        "lock_wait_s_per_create": _lock_wait(profile, n_created),
        "lock_profile": profile,
        # The same for the destroy phase.
        "domctl_hypercalls_per_destroy": (destroy_profile["hypercalls"].get("domctl", 0)
                                          / guests if destroy_profile and guests else None),
        "domctl_retries_per_destroy": domctl_retries_per_op(destroy_profile, guests),
        "lock_wait_s_per_destroy": _lock_wait(destroy_profile, guests),
        # Pages the idle loop (or a scrub worker) scrubbed while the guests
        # were destroyed: profiling builds with the lab's counter, else null.
        "destroy_background_scrubbed_pages": background_scrubbed(destroy_profile),
        "destroy_lock_profile": destroy_profile,
        # xl driver only (null otherwise): waits on xl's global create lock
        # file, from /proc/locks; 0 when xl does not take it.
        "xl_lock_wait_s_per_create": (xl_lock.wait_s / n_created
                                      if xl_lock is not None and n_created else None),
        "xl_lock_held_s": xl_lock.held_s if xl_lock is not None else None,
        "xl_lock_max_waiters": xl_lock.max_waiters if xl_lock is not None else None,
        "console_ok": console_ok,
        "errors": s.errors,
        "leftover_domains": sorted(after.leftover),
        "baseline_domains": sorted(baseline.domains),
        "free_memory_mib_before": baseline.free_memory_mib,
        "free_memory_mib_after": after.free_memory_mib,
    }


def storm(guests: int, concurrency: int, kernel: Path, memory_mib: int,
          prefix: str, workdir: Path, out: Path, driver: Driver,
          phases: tuple[str, ...]) -> dict[str, Any]:
    """One storm: create ``guests`` guests, at most ``concurrency`` at once,
    wait for their consoles, destroy them; what was measured."""
    create_name, destroy_name = phases
    s, baseline = prepare(guests, concurrency, kernel, memory_mib, prefix, workdir, out,
                          driver)
    try:
        # The whole storm's watch events, libxenstore's caches' apart (none
        # without the trace).
        whole = TraceReader(trace_path())
        created = create_phase(s, create_name)
        console_ok = console_phase(s)
        destroyed = destroy_phase(s, destroy_name)
        after = aftermath(s)
        result = account(s, baseline, created, console_ok, destroyed, after)
        result["xs_watch_events"] = dict(count_watch_events(whole.take_text()))
        return result
    except BaseException as exc:
        # The storm broke off: none of its guests may outlive it.
        for note in clean_up(s):
            exc.add_note(note)
        raise


def clean_up(s: Storm) -> list[str]:
    """Destroy every guest of the storm ``s`` still listed (a failed or
    killed create may have left one half-built); what went wrong, and the
    guests still listed after VANISH_WAIT_S."""
    names = {c.name for c in s.configs}
    done = destroy_listed(s.driver, names.__contains__, VANISH_WAIT_S,
                          prefix="clean-up: ", whose="the storm's guests")
    notes = list(done.errors)
    if done.left:
        notes.append(f"clean-up: storm guests left: {', '.join(sorted(done.left))}")
    return notes


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: the storm ran clean; 1: it ran and its result lists
    errors or leftover domains; 2: it broke off (the result holds only
    ``errors``, also on stderr, and the host takes it for a failure)."""
    req = parse_request(StormRequest, argv, prog="pyxen.lab.dom0.dom0bench")
    out = Path(os.environ.get(protocol.ENV_OUT, "."))
    try:
        result = run(req.guests, req.concurrency, req.kernel, req.memory_mib, req.prefix,
                     Path("/tmp/pyxen-bench"), out, DRIVERS[req.driver](),
                     running=req.running, trace_timed=req.trace_timed)
    except Exception as exc:  # noqa: BLE001 - any failure is handed back, not lost
        traceback.print_exc()
        errors = [f"the storm broke off: {describe(exc)}",
                  *getattr(exc, "__notes__", [])]
        (out / protocol.RESULT_FILE).write_text(json.dumps({"errors": errors}, indent=2))
        return 2
    (out / protocol.RESULT_FILE).write_text(json.dumps(result, indent=2))
    return 0 if not result["errors"] and not result["leftover_domains"] else 1


if __name__ == "__main__":
    sys.exit(main())
