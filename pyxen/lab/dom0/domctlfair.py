"""The domctl fairness benchmark's dom0 side: how long exclusive domctls
(XEN_DOMCTL_pausedomain and unpausedomain, which take Xen's global
domctl_lock) take while other threads create and destroy domains and read
domain information as fast as they can, against the same with nothing else
running.  Run by the host as
``python -m pyxen.lab.dom0.domctlfair --request JSON`` (a
pyxen.lab.contract.requests.DomctlRequest) inside the lab's dom0; writes
``result.json``.

Every domain it makes is empty (XEN_DOMCTL_createdomain only: no memory, no
vCPU, no Xenstore entry), with an ID from its own block
(protocol.DOMCTL_FIRST_ID up), and is destroyed again; any left at the end
is an error.  The probed domain is unpaused once first, which finishes its
creation: with the hypervisor series a domain's domctls take a lock of the
domain's own until then, and domctl_lock after, as every domctl on stock.
The load's domains are destroyed unfinished: on stock each create and each
destroy takes domctl_lock; with the series a create takes none, and a
destroy's first call (pausing it, marking it dying) takes domctl_lock with
the domain's own lock.  Xen runs a domctl that finds domctl_lock taken as a hypercall
continuation, so a domctl waiting for it does not sleep: it is retried until
it gets the lock, and how long that takes is what is timed here.
"""

from __future__ import annotations

import errno
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyxen.errors import XenError
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError, describe
from pyxen.lab.contract.percentiles import percentiles
from pyxen.lab.contract.requests import DOMCTL_CREATORS_MAX, DomctlRequest, parse_request
from pyxen.lab.dom0 import xl, xsstub
from pyxen.lab.dom0.result import hand_back

log = logging.getLogger(__name__)

#: How long a domain destroyed by a creator may take to be gone for good
#: (its ID is free again only then) before the run counts it as left over.
VANISH_S = 30.0
#: How long a stub domain may take to print its start line.
STUB_START_S = 60.0
#: How long a load thread may take to end once told to stop; one still
#: running after that is an error.
JOIN_S = 10.0


@dataclass
class Load:
    """What the load threads did, and their errors."""

    creates: int = 0
    destroys: int = 0
    reads: int = 0
    busy_ids: int = 0           # IDs still taken by a dying domain: skipped
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + n)


def own_handle(work: Callable[[Any, int, Load], None], arg: int, load: Load) -> None:
    """Run a load thread's ``work(xc, arg, load)`` with a libxenctrl handle of
    its own; whatever ends it early (opening the handle too) is one of
    ``load.errors``."""
    from pyxen.xenctrl import XenCtrl
    try:
        with XenCtrl() as xc:
            work(xc, arg, load)
    except BaseException as exc:    # a thread's exception is otherwise lost
        load.errors.append(f"{threading.current_thread().name}: {describe(exc)}")


def creator(xc: Any, first_id: int, load: Load) -> None:
    """Create and destroy empty domains, cycling through this thread's IDs."""
    ids = range(first_id, first_id + protocol.DOMCTL_IDS_PER_CREATOR)
    i = 0
    while not load.stop.is_set():
        domid = ids[i % len(ids)]
        i += 1
        try:
            xc.create_bare_domain(domid)
        except XenError as exc:
            if exc.errno == errno.EEXIST:       # still dying from the last lap
                load.add("busy_ids")
                continue
            load.errors.append(f"create {domid}: {exc}")
            return
        load.add("creates")
        try:
            xc.destroy(domid)
        except XenError as exc:
            load.errors.append(f"destroy {domid}: {exc}")
            return
        load.add("destroys")


def reader(xc: Any, domid: int, load: Load) -> None:
    """Read one domain's information (XEN_DOMCTL_getdomaininfo) in a loop."""
    while not load.stop.is_set():
        try:
            xc.domain_info(domid)
        except XenError as exc:
            load.errors.append(f"getdomaininfo {domid}: {exc}")
            return
        load.add("reads")


def probe(xc: Any, domid: int, n: int) -> list[float]:
    """``n`` pause/unpause pairs of ``domid``: each call's time in µs."""
    times: list[float] = []
    for _ in range(n):
        for call in (xc.pause, xc.unpause):
            t0 = time.perf_counter()
            call(domid)
            times.append((time.perf_counter() - t0) * 1e6)
    return times


def loaded_round(xc: Any, req: DomctlRequest, target: int) -> tuple[list[float], Load, float]:
    """The probes while the load runs: times, what the load did, its seconds."""
    load = Load()
    threads = [threading.Thread(target=own_handle, name=f"creator{i}", daemon=True,
                                args=(creator, protocol.DOMCTL_FIRST_ID + 1
                                      + i * protocol.DOMCTL_IDS_PER_CREATOR, load))
               for i in range(req.creators)]
    threads += [threading.Thread(target=own_handle, name=f"reader{i}", daemon=True,
                                 args=(reader, target, load)) for i in range(req.readers)]
    for t in threads:
        t.start()
    time.sleep(0.5)                  # the load under way before the first probe
    t0 = time.monotonic()
    try:
        times = probe(xc, target, req.probes)
    finally:
        elapsed = time.monotonic() - t0
        load.stop.set()
        deadline = time.monotonic() + JOIN_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        load.errors += [f"{t.name} still running {JOIN_S:.0f} s after the stop"
                        for t in threads if t.is_alive()]
    return times, load, elapsed


def ours(xc: Any) -> list[int]:
    """The IDs of this benchmark's empty domains that exist."""
    last = protocol.DOMCTL_FIRST_ID + DOMCTL_CREATORS_MAX * protocol.DOMCTL_IDS_PER_CREATOR
    return [d.domid for d in xc.domains() if protocol.DOMCTL_FIRST_ID <= d.domid <= last]


class Stubs:
    """The request's Xenstore stub domains (pyxen.lab.dom0.xsstub), each
    reading the probed domain ``target`` in every round; paused but while
    ``load()`` lets them run for a block.  ``start()`` starts them; the
    owner calls ``destroy()`` however that ended (a start that failed
    half-way leaves stubs too)."""

    def __init__(self, xc: Any, req: DomctlRequest, target: int, workdir: Path) -> None:
        self.xc, self.req, self.target, self.workdir = xc, req, target, workdir
        self.names = [f"{protocol.DOMCTL_STUB_PREFIX}{i}" for i in range(req.stubs)]
        self.domids: list[int] = []
        #: The IDs of stubs still listed after ``destroy()``.
        self.left: list[int] = []

    def start(self) -> None:
        for name in self.names:
            assert self.req.kernel is not None   # DomctlRequest.check
            self.domids.append(xsstub.start(name, self.req.kernel, self.workdir, self.target))
        deadline = time.monotonic() + STUB_START_S
        for name in self.names:
            while (start := xsstub.started(name)) is None:
                if time.monotonic() > deadline:
                    raise LabError(f"stub {name} did not start within {STUB_START_S:.0f} s")
                time.sleep(0.2)
            if start.first_rc != 0:
                raise LabError(f"stub {name}: getdomaininfo refused (rc {start.first_rc}): "
                               "it does not hold XSM_XS_PRIV")
        for domid in self.domids:
            self.xc.pause(domid)

    def calls(self) -> int:
        """Domctls the stubs reported so far (reported every few thousand)."""
        return sum(xsstub.calls(n) for n in self.names)

    @contextmanager
    def load(self) -> Iterator[None]:
        for domid in self.domids:
            self.xc.unpause(domid)
        try:
            yield
        finally:
            for domid in self.domids:
                self.xc.pause(domid)

    def destroy(self) -> list[str]:
        """Destroy every stub that exists (one whose start failed half-way
        too); the errors.  The stubs still listed after are in ``left``."""
        errors: list[str] = []
        if not self.names:
            return errors
        try:
            existing = {row.name for row in xl.list_domains()}
        except Exception as exc:
            return [f"listing the stubs to destroy them: {exc}"]
        for name in self.names:
            if name not in existing:
                continue
            try:
                xl.destroy(name)
            except Exception as exc:
                errors.append(f"destroy {name}: {exc}")
        try:
            self.left = sorted(row.domid for row in xl.list_domains() if row.name in self.names)
        except Exception as exc:
            errors.append(f"listing the stubs after destroying them: {exc}")
        return errors


def run(req: DomctlRequest) -> dict[str, Any]:
    from pyxen.xenctrl import XenCtrl
    rounds: list[dict[str, Any]] = []
    errors: list[str] = []
    with XenCtrl() as xc, tempfile.TemporaryDirectory() as workdir:
        if left := ours(xc):
            return {"rounds": [], "errors": [f"domains {left} exist before the run"],
                    "leftover_domains": left}
        target = None
        stubs = None
        left = []
        try:
            target = xc.create_bare_domain(protocol.DOMCTL_FIRST_ID)
            xc.unpause(target)              # creation finished: see the docstring
            xc.pause(target)
            stubs = Stubs(xc, req, target, Path(workdir))
            stubs.start()
            for rnd in range(req.rounds):
                idle = probe(xc, target, req.probes)
                calls0 = stubs.calls()
                with stubs.load():
                    loaded, load, elapsed = loaded_round(xc, req, target)
                errors += [f"round {rnd}: {e}" for e in load.errors]
                rounds.append({
                    "round": rnd,
                    "idle_us": percentiles(idle), "loaded_us": percentiles(loaded),
                    "loaded_us_each": [round(t, 1) for t in loaded],
                    "load_s": round(elapsed, 3),
                    "creates_per_s": round(load.creates / elapsed, 1),
                    "reads_per_s": round(load.reads / elapsed, 1),
                    "stub_calls_per_s": round((stubs.calls() - calls0) / elapsed, 1),
                    "creates": load.creates, "destroys": load.destroys,
                    "reads": load.reads, "busy_ids": load.busy_ids,
                })
        except Exception as exc:
            errors.append(f"{describe(exc)}")
        finally:
            if stubs is not None:
                errors += stubs.destroy()
            if target is not None:
                try:
                    xc.destroy(target)
                except Exception as exc:
                    errors.append(f"destroy {target}: {describe(exc)}")
            try:
                deadline = time.monotonic() + VANISH_S
                while (left := ours(xc)) and time.monotonic() < deadline:
                    time.sleep(0.2)
            except Exception as exc:
                errors.append(f"listing the domains left: {describe(exc)}")
            if stubs is not None:
                left = sorted(set(left) | set(stubs.left))
    if left:
        errors.append(f"domains {left} still exist {VANISH_S:.0f} s after the run")
    return {"creators": req.creators, "readers": req.readers, "stubs": req.stubs,
            "probes": req.probes, "rounds": rounds, "errors": errors, "leftover_domains": left}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    req = parse_request(DomctlRequest, argv, prog="pyxen.lab.dom0.domctlfair")
    try:
        result = run(req)
    except Exception as exc:        # no libxenctrl handle, say: still a result
        log.exception("the run failed")
        result = {"rounds": [], "errors": [f"{describe(exc)}"],
                  "leftover_domains": []}
    return hand_back(result)


if __name__ == "__main__":
    sys.exit(main())
