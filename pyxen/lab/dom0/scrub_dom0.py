"""dom0 side of the "birth after death under load" benchmark (the per-node
scrub workers and their sysctl).  Run by the host as
``python -m pyxen.lab.dom0.scrub_dom0 --request JSON``, JSON a
pyxen.lab.contract.requests.ScrubRequest, whose fields are named below.

Every pCPU runs a spinning tiny guest (or ``spinners`` of them in all, for a
host partly idle; of scheduler weight ``spinner_weight``, else the
default, dom0's), and ballast guests fill the host (``fill="host"``: node 1
but for the guest's size, every other node but a margin), so a birth has no
memory but the dead guest's pages, as on a densely packed host.
``fill="node"`` fills node 1 only; then Xen
(stock and patched alike) takes clean pages from another node before dirty
local ones, and the birth pays in remote memory rather than scrubbing.  For
each gap G of ``gaps`` (``reps`` times, interleaved): a guest of ``guest_mib``
on NUMA node 1 is destroyed, G seconds pass, and a guest of the same size is
created on node 1.  Recorded: destroy and create time and dom0's CPU time for
each, the spinners' CPU throughput during the gap, node 1's dirty pages before
and after the create, which node the new guest's pages came from,
and -- where the hypervisor has XEN_SYSCTL_scrub_op -- who scrubbed the dead
guest's pages (the node's worker, its CPUs, other nodes' CPUs, or the
allocation).  Then, per guest size of ``sizes`` (``size_reps`` times), destroy
time and the time until the dead guest's memory is clean (up to
``clean_timeout`` s).

Where Xen has XEN_SYSCTL_scrub_op, ``scrub_policy`` is set first ("eager":
the per-node workers on; "idle": off, stock's behaviour; "boot": as booted)
and recorded with the result.

Dirty pages come from XEN_SYSCTL_scrub_op on a patched Xen; a stock Xen has
no such sysctl, and there its heap dump (debug key 'H': "Node N has P
unscrubbed pages", printed synchronously by the key handler) is read from the
console ring, so both variants are
measured the same way.
"""

from __future__ import annotations

import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pyxen.config import DomainConfig
from pyxen.host import Domain, Host
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import describe
from pyxen.lab.contract.heapdump import PAGE_SHIFT, dma_free_by_node, unscrubbed_by_node
from pyxen.lab.contract.requests import ScrubRequest, parse_request
from pyxen.lab.contract.turns import in_turn
from pyxen.lab.contract.xenprof import phase_figures
from pyxen.lab.dom0.result import hand_back
from pyxen.lab.dom0.xenprof import Profiler
from pyxen.lab.dom0.xstrace import xs_trace_off
from pyxen.xenctrl import ScrubNodeStats, scrub_supported

NODE = 1
#: Free memory left on node 1 beside the guest's size (page tables, p2m).
BALLAST_MARGIN_MIB = 24
FILLS = protocol.SCRUB_FILLS
T = TypeVar("T")
#: How long one ``xl destroy`` may run before it counts as a failed try.
XL_DESTROY_S = 120.0
#: How long a destroyed guest may take to be gone for good.
DEATH_S = 120.0
_COUNTERS = ("scrubbed_local", "scrubbed_remote", "scrubbed_alloc", "scrubbed_worker",
             "freed_dirty", "taken_dirty")


class DirtyPages:
    """Node 1's dirty free pages, and scrub counters where Xen has them."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.counters = scrub_supported()
        if self.counters:
            try:
                host.scrub_state()
            except OSError:
                self.counters = False

    def node(self) -> ScrubNodeStats | None:
        return self.host.scrub_state().nodes[NODE] if self.counters else None

    def sample(self) -> tuple[ScrubNodeStats | None, int]:
        """Node 1's scrub counters (None without the sysctl) and its dirty
        pages, from one read of Xen's state."""
        st = self.node()
        if st is not None:
            return st, st.dirty_pages
        return None, unscrubbed_by_node(self.host.xc.heap_dump()).get(NODE, 0)

    def dirty(self) -> int:
        return self.sample()[1]

    def wait_clean(self, timeout: float) -> float | None:
        t0 = time.monotonic()
        while self.dirty():
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(0.1)
        return time.monotonic() - t0


def deltas(after: ScrubNodeStats | None, before: ScrubNodeStats | None) -> dict[str, int] | None:
    if after is None or before is None:
        return None
    return {c: int(getattr(after, c)) - int(getattr(before, c)) for c in _COUNTERS}


class Bench:
    def __init__(self, host: Host, kernel: Path, prefix: str, clean_timeout: float) -> None:
        self.host = host
        self.kernel = kernel
        self.prefix = prefix
        self.clean_timeout = clean_timeout
        self.dirty = DirtyPages(host)
        self.spinners: list[Domain] = []
        self._n = 0
        self.destroy_retries = 0
        self.destroy_errors: list[str] = []
        #: Xen's counters around each timed destroy (profiling builds).
        self.profiler = Profiler()

    def guest(self, mib: int) -> Domain:
        self._n += 1
        return self.host.create(DomainConfig(f"{self.prefix}g{self._n}", self.kernel,
                                             memory_mib=mib, nodes=(NODE,)))

    def start_spinners(self, count: int, weight: int | None = None) -> None:
        """``count`` spinning guests, of scheduler weight ``weight`` (None:
        the scheduler's default, dom0's)."""
        for i in range(count):
            self.spinners.append(self.host.create(
                DomainConfig(f"{self.prefix}spin{i}", self.kernel, memory_mib=16,
                             cmdline="spin", weight=weight)))

    def spin_cpu_s(self) -> float:
        return sum(d.info().cpu_time_ns for d in self.spinners) / 1e9

    def settle(self) -> None:
        """Start from clean memory: pause the load so idle CPUs scrub."""
        for d in self.spinners:
            d.pause()
        try:
            if self.dirty.wait_clean(300) is None:
                raise RuntimeError("node 1 did not become clean with the load paused")
        finally:
            for d in self.spinners:
                d.unpause()

    @staticmethod
    def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
        t0 = time.monotonic()
        r = fn()
        return time.monotonic() - t0, r

    def xl_destroy(self, dom: Domain) -> None:
        """Destroy through an ``xl`` process (both variants pay the same xl
        start-up in destroy_s).  Under this load, libxl's forked destroyer
        child of a large guest sometimes crashes at once -- in pyxen's process
        and in xl's alike, stock and patched, with memory that looks corrupt
        right after fork (seen on Xen 4.17) -- so a failed destroy is
        retried and counted in ``destroy_retries``."""
        why = ""
        for attempt in range(4):
            try:
                r = subprocess.run(["xl", "destroy", str(dom.domid)], capture_output=True,
                                   text=True, check=False, timeout=XL_DESTROY_S)
                ok, why = r.returncode == 0, r.stderr.strip()
            except subprocess.TimeoutExpired:
                ok, why = False, f"xl destroy still running after {XL_DESTROY_S:.0f} s"
            if ok or self.host.xc.domain_info(dom.domid) is None:
                return
            self.destroy_retries += 1
            self.destroy_errors.append(why[-300:])
            time.sleep(1)
        raise RuntimeError(f"xl destroy {dom.domid} failed 4 times: {why}")

    def kill(self, dom: Domain) -> float:
        def go() -> None:
            self.xl_destroy(dom)
            if not dom.wait_death(120):
                raise RuntimeError(f"domain {dom.domid} still dying after 120 s")
        return self.timed(go)[0]

    def profiled_destroy(self, destroy: Callable[[], T]) -> tuple[T, dict[str, Any]]:
        """``destroy()``'s result, and Xen's lock profile and counters of it
        (None but on profiling builds) as result fields: ``destroy_profile``
        and its ``destroy_*`` figures (heap_lock's wait, domctl entries,
        pages scrubbed in the background meanwhile)."""
        self.profiler.reset()
        result = destroy()
        profile = self.profiler.read()
        return result, {"destroy_profile": profile,
                        **{f"destroy_{k}": v for k, v in phase_figures(profile).items()}}

    def free_pages_by_node(self) -> dict[int, int]:
        return {n.node: n.memfree >> PAGE_SHIFT for n in self.host.numainfo()}

    def dom0_cpu_s(self) -> float:
        """dom0's CPU time, every vCPU, hypervisor time in its hypercalls
        included: a create's synchronous scrubbing is charged here."""
        info = self.host.xc.domain_info(0)
        assert info is not None
        return info.cpu_time_ns / 1e9

    def timed_cpu(self, fn: Callable[[], Any]) -> tuple[float, float, float, Any]:
        """(wall s, dom0 CPU s, spinners' CPU s, result) of ``fn()``.  Under
        spinning load the wall time is mostly the CPU share dom0 wins; its
        CPU time is the work the operation cost."""
        d0, s0 = self.dom0_cpu_s(), self.spin_cpu_s()
        wall, r = self.timed(fn)
        return wall, self.dom0_cpu_s() - d0, self.spin_cpu_s() - s0, r

    def gap_run(self, gap: float, mib: int, rep: int = 0) -> dict[str, Any]:
        self.settle()
        victim = self.guest(mib)
        before = self.dirty.node()
        (destroy_s, destroy_cpu, _, _), profiled = self.profiled_destroy(
            lambda: self.timed_cpu(lambda: self.kill(victim)))
        cpu0, t0 = self.spin_cpu_s(), time.monotonic()
        time.sleep(gap)
        cpu1, t1 = self.spin_cpu_s(), time.monotonic()
        mid, dirty_at_create = self.dirty.sample()
        free_before = self.free_pages_by_node()
        create_s, create_cpu, create_spin, born = self.timed_cpu(lambda: self.guest(mib))
        free_after = self.free_pages_by_node()
        after, dirty_after_create = self.dirty.sample()
        self.kill(born)
        # Where the new guest's memory came from: what each node lost while it
        # was created (the host is otherwise still; page tables and p2m are
        # a few hundred pages of it).
        placed = {n: max(0, free_before[n] - free_after.get(n, 0)) for n in free_before}
        return {
            "gap_s": gap,
            "rep": rep,
            "guest_mib": mib,
            "destroy_s": destroy_s,
            "destroy_dom0_cpu_s": destroy_cpu,
            **profiled,
            "create_s": create_s,
            "create_dom0_cpu_s": create_cpu,
            "spin_cpus_busy_during_create": create_spin / create_s,
            "spin_cpus_busy_during_gap": ((cpu1 - cpu0) / (t1 - t0)) if gap > 0 else None,
            "dirty_pages_at_create": dirty_at_create,
            "dirty_pages_after_create": dirty_after_create,
            # where the new guest's memory came from (it asked for node NODE)
            "born_pages_by_node": {str(n): c for n, c in sorted(placed.items())},
            "born_on_node_fraction": placed.get(NODE, 0) / max(1, sum(placed.values())),
            "scrub_during_gap": deltas(mid, before),
            "scrub_during_create": deltas(after, mid),
        }

    def size_run(self, mib: int, rep: int = 0) -> dict[str, Any]:
        self.settle()
        victim = self.guest(mib)
        before = self.dirty.node()
        destroy_s, profiled = self.profiled_destroy(lambda: self.kill(victim))
        clean_s = self.dirty.wait_clean(self.clean_timeout)
        return {
            "guest_mib": mib,
            "rep": rep,
            "destroy_s": destroy_s,
            **profiled,
            "time_to_clean_s": clean_s,  # None: still dirty after clean_timeout_s
            "dirty_pages_left": 0 if clean_s is not None else self.dirty.dirty(),
            "scrub": deltas(self.dirty.node(), before),
        }

    def fill(self, leave_mib: int, fill: str, dma_bits: int | None) -> dict[str, int]:
        """Ballast guests so that only ``leave_mib`` (+ a margin) stays free on
        node 1 and, with ``fill == "host"``, only the margin on every other
        node: the next birth then has no clean memory but the dead guest's
        pages -- a full host.  (With only node 1 filled, Xen prefers clean
        pages on another node to dirty local ones: the birth does not scrub
        but gets remote memory.)  Xen's DMA pool (below 2^dma_bits) is left
        out: domains get it only once everything else is gone, so a ballast
        sized to include it would spill onto the next node.  Node 1 is filled
        last, from what the others left.  Returns the ballast MiB per node."""
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
        self.settle()
        nodes = [n.node for n in self.host.numainfo()]
        order = [n for n in nodes if n != NODE] + [NODE] if fill == "host" else [NODE]
        placed: dict[str, int] = {}
        for node in order:
            free = self.free_pages_by_node()[node]
            if dma_bits is not None:
                free -= dma_free_by_node(self.host.xc.heap_dump(), dma_bits).get(node, 0)
            leave = BALLAST_MARGIN_MIB + (leave_mib if node == NODE else 0)
            ballast = (free >> (20 - PAGE_SHIFT)) - leave
            if ballast < 16:
                continue
            self.host.create(DomainConfig(f"{self.prefix}ballast{node}", self.kernel,
                                          memory_mib=ballast, nodes=(node,)))
            placed[str(node)] = ballast
        return placed

    def cleanup(self) -> tuple[list[str], list[int]]:
        """Destroy every guest of the run, each whatever became of the
        others; never raises.  The errors, and the IDs of guests left."""
        errors: list[str] = []
        left: list[int] = []
        try:
            ours = [d for d in self.host.domains() if d.name.startswith(self.prefix)]
        except Exception as exc:
            return [f"listing the guests to destroy them: {describe(exc)}"], []
        for d in ours:
            try:
                self.xl_destroy(d)
                if not d.wait_death(DEATH_S):
                    raise RuntimeError(f"still dying after {DEATH_S:.0f} s")
            except Exception as exc:
                errors.append(f"destroy {d.name} ({d.domid}): {describe(exc)}")
                left.append(d.domid)
        return errors, left


def policy_turns(host: Host, counters: bool, rep: int | None) -> Iterator[str | None]:
    """The scrub policies a repetition's gap run runs under, each set just
    before it: on a Xen without the sysctl (``counters`` false) None, Xen's
    own; with ``rep`` None the one already set; else both of
    SCRUB_ALTERNATION in turn, the order swapped every repetition."""
    if not counters:
        yield None
    elif rep is None:
        yield host.scrub_state().policy.value
    else:
        for pol in in_turn(protocol.SCRUB_ALTERNATION, rep):
            host.set_scrub_policy(pol)
            yield pol


def main(argv: list[str] | None = None) -> int:
    req = parse_request(ScrubRequest, argv, prog="pyxen.lab.dom0.scrub_dom0")
    result: dict[str, Any] = {}
    errors: list[str] = []
    try:
        run(req, result, errors)
    except Exception as exc:
        traceback.print_exc()
        errors.insert(0, f"{describe(exc)}")    # the cause, before the cleanup's
    result["errors"] = errors
    return hand_back(result)


def run(req: ScrubRequest, result: dict[str, Any], errors: list[str]) -> None:
    """The benchmark into ``result``; the errors of its cleanup (the guests
    it could not destroy in ``result["leftover_domains"]``) into ``errors``."""
    # Nothing here counts Xenstore requests: time Xen without the trace's cost.
    with xs_trace_off(), Host() as host:
        bench = Bench(host, req.kernel, req.prefix, req.clean_timeout)
        try:
            pcpus = host.physinfo().nr_cpus
            spinners = pcpus if req.spinners is None else req.spinners
            bench.start_spinners(spinners, req.spinner_weight)
            alternate = req.scrub_policy == protocol.SCRUB_ALTERNATE
            if bench.dirty.counters and req.scrub_policy != "boot":
                host.set_scrub_policy(protocol.SCRUB_ALTERNATION[0] if alternate
                                      else req.scrub_policy)
            policy = host.scrub_state() if bench.dirty.counters else None
            result.update({
                "pcpus": pcpus,
                "spinners": spinners,
                "spinner_weight": req.spinner_weight,
                # what the spinners' (and dom0's default) weight is weighed by
                "scheduler": host.xl.scheduler(),
                "scrub_counters": bench.dirty.counters,
                "scrub_policy": None if policy is None else {
                    "policy": policy.policy.value, "budget_us": policy.budget_us,
                    "period_us": policy.period_us},
                "clean_timeout_s": req.clean_timeout,
                # The gap runs ran with the workers on and off in turn.
                "scrub_alternated": bool(alternate and bench.dirty.counters),
                "xenstored_trace": False,
                "size_runs": [],
            })
            for rep in range(req.size_reps):
                for s in req.sizes:
                    result["size_runs"].append(bench.size_run(s, rep))
            result["fill"] = req.fill
            result["dma_bits"] = req.dma_bits
            result["ballast_mib_by_node"] = bench.fill(req.guest_mib, req.fill, req.dma_bits)
            result["ballast_mib"] = sum(result["ballast_mib_by_node"].values())
            result["gap_runs"] = []
            for rep in range(req.reps):
                for g in req.gaps:
                    for pol in policy_turns(host, bench.dirty.counters,
                                            rep if alternate else None):
                        result["gap_runs"].append(
                            {**bench.gap_run(g, req.guest_mib, rep), "scrub_policy": pol})
        finally:
            # Never raises: an exception of the run above goes on unmasked.
            cleanup_errors, result["leftover_domains"] = bench.cleanup()
            errors += cleanup_errors
            result["destroy_retries"] = bench.destroy_retries
            result["destroy_errors"] = bench.destroy_errors


if __name__ == "__main__":
    sys.exit(main())
