"""The autoscaling benchmark's dom0 side: replay a function-invocation
schedule (pyxen.lab.contract.requests.AutoscaleRequest) on tiny guests,
scaled by pyxen.lab.dom0.autoscaler, and write what happened as
``result.json``.  Run by the host as
``python -m pyxen.lab.dom0.autoscale --request JSON`` inside the lab's dom0.

Real time drives it: invocations arrive at their (scaled) start times, an
instance is busy for its invocation's (scaled) duration (nothing runs in
the guest: its cost is being up), creates and destroys run in a pool of
``max_inflight`` threads while the main loop goes on.  A cold start is
timed from the scaler's decision to the new guest's console line.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import queue
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyxen.config import DomainConfig
from pyxen.errors import XenError
from pyxen.lab.contract import protocol
from pyxen.lab.contract.autoscale_result import what_was_lost
from pyxen.lab.contract.errors import LabError, describe
from pyxen.lab.contract.percentiles import percentiles
from pyxen.lab.contract.requests import AutoscaleRequest, parse_request
from pyxen.lab.dom0 import tenants
from pyxen.lab.dom0.autoscaler import Autoscaler, Create, Destroy, Fail, Run
from pyxen.lab.dom0.drivers import (CONSOLE_WAIT_S, DRIVERS, VANISH_WAIT_S, Driver,
                                    destroy_listed, wait_console, wait_vanished)
from pyxen.lab.dom0.settle import SCRUB_SETTLE_S, settle_scrub
from pyxen.lab.dom0.xstrace import TraceReader, count_requests, count_watch_events, trace_path

log = logging.getLogger(__name__)

#: How often a starting guest's console log is looked at (cold-start resolution).
CONSOLE_POLL_S = 0.05
#: How long free memory gets to come back to its baseline after the last destroy.
SETTLE_S = 60.0


@dataclass
class InvocationRecord:
    func: int
    arrive_s: float
    run_s: float | None = None
    finish_s: float | None = None
    cold: bool = False          # it waited for an instance created for it
    failed: str | None = None


@dataclass
class InstanceRecord:
    func: int
    name: str
    decided_s: float
    up_s: float | None = None
    destroy_start_s: float | None = None
    destroy_s: float | None = None
    error: str | None = None
    destroy_error: str | None = None


@dataclass
class Replay:
    req: AutoscaleRequest
    driver: Driver
    workdir: Path
    invocations: list[InvocationRecord] = field(default_factory=list)
    instances: dict[int, InstanceRecord] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    peak_instances: int = 0
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events: queue.Queue[tuple[str, int, float, str | None]] = queue.Queue()
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- the work the pool does ----------------------------------------------------
    # Every task posts exactly one event, whatever it raises: the replay
    # waits for one per task.  An unexpected exception fails the create or
    # the destroy (counted, never retried); the run's cleanup destroys a
    # guest it left.
    def create(self, inst: int) -> None:
        self._posting("failed", self._create, inst)

    def destroy(self, inst: int) -> None:
        self._posting("destroyed", self._destroy, inst)

    def _posting(self, event: str, task: Callable[[int], None], inst: int) -> None:
        """Run ``task(inst)``; should it raise, post ``event`` with the error
        (and raise again what is no Exception: an interrupt)."""
        try:
            task(inst)
        except BaseException as exc:
            self.events.put((event, inst, self.now(), describe(exc)))
            if not isinstance(exc, Exception):
                raise

    def _create(self, inst: int) -> None:
        rec = self.instances[inst]
        config = DomainConfig(name=rec.name, kernel=self.req.kernel,
                              memory_mib=self.req.memory_mib)
        path = self.workdir / f"{rec.name}.cfg"
        path.write_text(config.to_xl_config())
        try:
            self.driver.create(config, path)
        except (XenError, LabError) as exc:   # the driver leaves no domain behind
            self.events.put(("failed", inst, self.now(), str(exc)))
            return
        if not wait_console([rec.name], CONSOLE_WAIT_S, CONSOLE_POLL_S)[rec.name]:
            error = f"no console line in {CONSOLE_WAIT_S:.0f} s"
            try:
                self.driver.destroy(rec.name)
            except (XenError, LabError) as exc:
                error += f"; its destroy failed too: {exc}"
            self.events.put(("failed", inst, self.now(), error))
            return
        self.events.put(("started", inst, self.now(), None))

    def _destroy(self, inst: int) -> None:
        rec = self.instances[inst]
        try:
            self.driver.destroy(rec.name)
            self.events.put(("destroyed", inst, self.now(), None))
        except (XenError, LabError) as exc:
            self.events.put(("destroyed", inst, self.now(), str(exc)))


def replay(req: AutoscaleRequest, driver: Driver, workdir: Path,
           r: Replay | None = None) -> Replay:
    """Run the schedule to its end and destroy every instance; the records
    go into ``r`` when given (what a replay that raised had done)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if r is None:
        r = Replay(req, driver, workdir)
    scaler = Autoscaler(req.keep_alive_s)
    timers: list[tuple[float, int, int]] = []          # (due, invocation, instance)
    next_arrival = 0
    pending_ops = 0
    draining = False
    n = len(req.funcs)

    with ThreadPoolExecutor(max_workers=req.max_inflight) as pool:
        def act(actions: list[Any], now: float) -> None:
            nonlocal pending_ops
            for a in actions:
                if isinstance(a, Create):
                    r.instances[a.instance] = InstanceRecord(
                        a.func, f"{req.prefix}{a.instance}", now)
                    pending_ops += 1
                    pool.submit(r.create, a.instance)
                elif isinstance(a, Run):
                    inv = r.invocations[a.invocation]
                    inv.run_s = now
                    heapq.heappush(timers, (now + req.durations[a.invocation],
                                            a.invocation, a.instance))
                elif isinstance(a, Destroy):
                    r.instances[a.instance].destroy_start_s = now
                    pending_ops += 1
                    pool.submit(r.destroy, a.instance)
                elif isinstance(a, Fail):
                    r.invocations[a.invocation].failed = a.reason
            live = scaler.live()
            r.peak_instances = max(r.peak_instances, live)
            if not r.timeline or r.timeline[-1][1] != live:
                r.timeline.append((round(now, 3), live))

        while True:
            now = r.now()
            while next_arrival < n and req.starts[next_arrival] <= now:
                i = next_arrival
                r.invocations.append(InvocationRecord(req.funcs[i], req.starts[i]))
                actions = scaler.arrive(i, req.funcs[i], now)
                if not any(isinstance(a, Run) for a in actions):
                    r.invocations[i].cold = True
                act(actions, now)
                next_arrival += 1
            while timers and timers[0][0] <= now:
                _, i, inst = heapq.heappop(timers)
                r.invocations[i].finish_s = now
                act(scaler.finished(inst, now), now)
            act(scaler.expire(now), now)
            if next_arrival == n and not timers and not draining and all(
                    inv.run_s is not None or inv.failed for inv in r.invocations) \
                    and not any(rec.up_s is None and rec.error is None
                                for rec in r.instances.values()):
                draining = True
            if draining:
                act(scaler.drain(), now)
                if pending_ops == 0 and scaler.live() == 0:
                    break
            due = [t for t in (req.starts[next_arrival] if next_arrival < n else None,
                               timers[0][0] if timers else None,
                               None if draining else scaler.next_expiry())
                   if t is not None]
            timeout = max(0.0, min(due) - r.now()) if due else 1.0
            try:
                kind, inst, t, error = r.events.get(timeout=min(timeout, 1.0))
            except queue.Empty:
                continue
            rec = r.instances[inst]
            pending_ops -= 1
            if kind == "started":
                rec.up_s = t
                act(scaler.started(inst, t), t)
            elif kind == "failed":
                rec.error = error
                r.errors.append(f"create {rec.name}: {error}")
                act(scaler.start_failed(inst, t), t)
            elif kind == "destroyed":
                rec.destroy_s = t - (rec.destroy_start_s or t)
                if error:
                    rec.destroy_error = error
                    r.errors.append(f"destroy {rec.name}: {error}")
    return r


def summarise(r: Replay) -> dict[str, Any]:
    """The figures bench.json's ``autoscale`` section holds for one variant."""
    cold = [rec.up_s - rec.decided_s for rec in r.instances.values() if rec.up_s is not None]
    done = [inv for inv in r.invocations if inv.finish_s is not None]
    latency = [inv.finish_s - inv.arrive_s for inv in done]  # type: ignore[operator]
    waits = [inv.run_s - inv.arrive_s for inv in r.invocations if inv.run_s is not None]
    destroys = [rec.destroy_s for rec in r.instances.values()
                if rec.destroy_s is not None and rec.destroy_error is None]
    return {
        "cold_start_s": percentiles(cold),
        "cold_start_each_s": [round(c, 4) for c in cold],
        "invocation_latency_s": percentiles(latency),
        "invocation_latency_each_s": [round(x, 4) for x in latency],
        "invocations": len(r.invocations),
        "invocations_done": len(done),
        "invocations_failed": sum(1 for inv in r.invocations if inv.failed),
        "cold_invocations": sum(1 for inv in r.invocations if inv.cold),
        "waited_over_1s": sum(1 for w in waits if w > 1.0),
        "creates": len(r.instances),
        "creates_failed": sum(1 for rec in r.instances.values() if rec.error),
        "destroy_s": percentiles(destroys),
        "destroy_each_s": [round(d, 4) for d in destroys],
        "destroys_failed": sum(1 for rec in r.instances.values() if rec.destroy_error),
        "peak_instances": r.peak_instances,
        "instances_over_time": r.timeline,
        "errors": r.errors,
    }


def xs_request_fields(trace_text: str | None, creates: int) -> dict[str, Any]:
    """xenstored's requests during the replay, from its trace: every
    client's (the toolstack's creates and destroys, xenconsoled, the
    backends, the guests), by operation and per cold start; and the watch
    events it sent, those of libxenstore's caches apart.  None when
    xenstored ran without a trace."""
    if trace_text is None:
        return {"xs_requests": None, "xs_requests_by_op": None,
                "xs_requests_per_cold_start": None, "xs_watch_events": None}
    ops = count_requests(trace_text)
    total = sum(ops.values())
    return {"xs_requests": total, "xs_requests_by_op": dict(ops.most_common()),
            "xs_requests_per_cold_start": total / creates if creates else None,
            "xs_watch_events": dict(count_watch_events(trace_text))}


def run(req: AutoscaleRequest, driver: Driver, workdir: Path) -> dict[str, Any]:
    """The replay between its load (running guests, spinners) set up and
    torn down, with the checks that nothing was lost.  Whatever raises on
    the way (but KeyboardInterrupt and the like) is an error of the result;
    every guest of this run (named ``req.prefix``...) still listed at the
    end is destroyed, and those that were are leftovers."""
    from pyxen.xenctrl import XenCtrl
    from pyxen.xenstore import XenStore
    workdir.mkdir(parents=True, exist_ok=True)
    spinners: list[str] = []
    others = tenants.Tenants(names=[])
    r: Replay | None = None
    replayed = False
    failure: str | None = None
    left: set[str] = set()
    xs_text: str | None = None
    free_before: int | None = None
    free_after: int | None = None
    nodes_left: list[str] = []
    # Before any load: spinners keep the idle loop from ever scrubbing.
    settled = settle_scrub(SCRUB_SETTLE_S)
    try:
        others = tenants.start(driver, req.running, req.kernel, 16, f"{req.prefix}load-",
                               workdir, storm_mib=0)
        with XenCtrl() as xc, XenStore() as xs:
            cpus = xc.physinfo().nr_cpus
            for i in range(cpus * req.spinners_per_cpu):
                name = f"{req.prefix}spin{i}"
                config = DomainConfig(name, req.kernel, memory_mib=16, cmdline="spin")
                path = workdir / f"{name}.cfg"
                path.write_text(config.to_xl_config())
                driver.create(config, path)
                spinners.append(name)
            before_nodes = set(xs.directory("/local/domain"))
            free_before = driver.free_memory_mib()
            xs_trace = trace_path()
            trace = TraceReader(xs_trace) if xs_trace.exists() else None
            r = Replay(req, driver, workdir)
            replay(req, driver, workdir, r)
            replayed = True
            names = {rec.name for rec in r.instances.values()}
            left = wait_vanished(driver, names, VANISH_WAIT_S)
            xs_text = trace.take_text() if trace is not None else None
            deadline = time.monotonic() + SETTLE_S
            while driver.free_memory_mib() < free_before and time.monotonic() < deadline:
                time.sleep(1.0)
            free_after = driver.free_memory_mib()
            nodes_left = sorted(set(xs.directory("/local/domain")) - before_nodes)
    except Exception as exc:
        log.exception("the autoscale run failed")
        failure = f"run failed: {describe(exc)}"
    finally:
        # Each step of the clean-up runs whatever the one before raised.
        for name in spinners:
            try:
                driver.destroy(name)
            except Exception as exc:
                others.errors.append(f"destroy spinner {name}: {describe(exc)}")
        try:
            left_load = tenants.stop(driver, others)
        except Exception as exc:
            others.errors.append(f"stop the tenants: {describe(exc)}")
            left_load = []
        strays, cleanup_errors = _destroy_strays(driver, req.prefix)
    result = summarise(r if r is not None else Replay(req, driver, workdir))
    result.update(xs_request_fields(xs_text, result["creates"]))
    if not replayed:   # the schedule's invocations that never arrived are not done
        result["invocations"] = len(req.funcs)
    result.update({
        "driver": driver.name, "keep_alive_s": req.keep_alive_s,
        "memory_mib": req.memory_mib, "max_inflight": req.max_inflight,
        "running": others.as_json(), "spinners": len(spinners), "scrub_settle": settled,
        "leftover_domains": sorted(left | set(left_load) | strays),
        "xenstore_nodes_left": nodes_left,
        "free_memory_mib_before": free_before, "free_memory_mib_after": free_after,
        "memory_not_returned_mib": (None if free_before is None or free_after is None
                                    else max(0, free_before - free_after)),
    })
    result["errors"] = (([failure] if failure else []) + result["errors"] + others.errors
                        + cleanup_errors)
    return result


def _destroy_strays(driver: Driver, prefix: str) -> tuple[set[str], list[str]]:
    """Destroy every guest named ``prefix``... still listed (the run's own
    that its replay or a failure left behind): their names, and errors for
    destroys that failed and guests still listed after VANISH_WAIT_S."""
    done = destroy_listed(driver, lambda n: n.startswith(prefix), VANISH_WAIT_S,
                          "destroy leftover", whose="the run's guests")
    errors = list(done.errors)
    if done.left:
        errors.append(f"still listed after their destroy: {', '.join(sorted(done.left))}")
    return set(done.found | done.left), errors


#: Where the replay writes its guests' xl configurations in dom0.
SCRATCH_DIR = Path("/tmp/pyxen-autoscale")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    req = parse_request(AutoscaleRequest, argv, prog="pyxen.lab.dom0.autoscale")
    out = Path(os.environ.get(protocol.ENV_OUT, "."))
    result = run(req, DRIVERS[req.driver](), SCRATCH_DIR)
    (out / protocol.RESULT_FILE).write_text(json.dumps(result, indent=2))
    lost = what_was_lost(result)
    for reason in lost:
        log.error("lost: %s", reason)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
