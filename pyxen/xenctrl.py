"""libxenctrl: domain info, host physical and NUMA info, pause/unpause/destroy,
memory claims, page offlining, the scrub policy and counters (XEN_SYSCTL_scrub_op, patched Xen
only).  Every call releases the GIL (cffi does) so threads run in parallel."""

from __future__ import annotations

import errno
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from pyxen import limits
from pyxen._native import NativeHandle, check_xc, clear_message, ffi, lib, raise_xc
from pyxen.errors import XenCtrlError

PAGE_SIZE = limits.PAGE_SIZE
#: Event channels of a bare domain (create_bare_domain), as libxl's default.
_BARE_EVTCHN_PORTS = 1024


@dataclass(frozen=True)
class DomainInfo:
    """One domain as the hypervisor reports it (XEN_DOMCTL_getdomaininfo)."""

    domid: int
    dying: bool
    shutdown: bool
    shutdown_reason: int | None
    paused: bool
    blocked: bool
    running: bool
    xenstore: bool          # a Xenstore domain (XEN_DOMCTL_CDF_xs_domain: XSM_XS_PRIV)
    tot_pages: int
    max_pages: int
    outstanding_pages: int
    cpu_time_ns: int
    online_vcpus: int       # vCPUs up (a PV guest brings up its secondaries itself)
    max_vcpus: int          # vCPUs configured (max_vcpu_id + 1)
    cpupool: int

    @property
    def memory_mib(self) -> int:
        return self.tot_pages // limits.PAGES_PER_MIB


@dataclass(frozen=True)
class PhysInfo:
    nr_cpus: int
    nr_nodes: int
    threads_per_core: int
    cores_per_socket: int
    cpu_khz: int
    total_pages: int
    free_pages: int
    scrub_pages: int
    outstanding_pages: int

    @property
    def free_mib(self) -> int:
        return self.free_pages // limits.PAGES_PER_MIB


@dataclass(frozen=True)
class NumaNode:
    node: int
    memsize: int            # bytes
    memfree: int            # bytes
    distances: tuple[int | None, ...]  # to each node; None where Xen reports none


@dataclass(frozen=True)
class CpuTopology:
    cpu: int
    core: int
    socket: int
    node: int


class ScrubPolicy(Enum):
    """Who scrubs freed memory: idle CPUs only (stock Xen's behaviour, and
    the patched hypervisor's default), or also a worker per NUMA node within
    a time budget."""

    IDLE = "idle"
    EAGER = "eager"

    @property
    def code(self) -> int:
        return int(lib.PYXEN_SCRUB_POLICY_IDLE if self is ScrubPolicy.IDLE
                   else lib.PYXEN_SCRUB_POLICY_EAGER)

    @classmethod
    def parse(cls, value: ScrubPolicy | str) -> ScrubPolicy:
        if isinstance(value, ScrubPolicy):
            return value
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown scrub policy {value!r} (one of: {names})") from None


@dataclass(frozen=True)
class ScrubNodeStats:
    """Page counts of one NUMA node's memory since boot (see
    struct xen_sysctl_scrub_node).  At any time
    ``freed_dirty == dirty_pages + scrubbed_local + scrubbed_remote +
    scrubbed_alloc + taken_dirty + deferred + offlined`` (``accounted``)."""

    node: int
    dirty_pages: int        # free, waiting for a scrub
    freed_dirty: int        # freed needing a scrub
    scrubbed_local: int     # in the background by this node's CPUs
    scrubbed_remote: int    # in the background by other nodes' CPUs
    scrubbed_alloc: int     # synchronously by the allocation that took them
    scrubbed_worker: int    # of local + remote, by the node's scrub worker
    taken_dirty: int        # allocated unscrubbed (MEMF_no_scrub)
    worker_runs: int        # periods the node's worker ran
    deferred: int           # allocated dirty for a domain build to scrub (MEMF_keep_scrub)
    offlined: int           # offlined while dirty

    @property
    def accounted(self) -> int:
        """Where every page freed dirty went; equals ``freed_dirty``."""
        return (self.dirty_pages + self.scrubbed_local + self.scrubbed_remote
                + self.scrubbed_alloc + self.taken_dirty + self.deferred + self.offlined)


@dataclass(frozen=True)
class ScrubState:
    policy: ScrubPolicy
    budget_us: int          # longest a worker scrubs per run
    period_us: int          # a worker's runs start at most this often
    nodes: tuple[ScrubNodeStats, ...]

    @property
    def dirty_pages(self) -> int:
        return sum(n.dirty_pages for n in self.nodes)


#: The hypervisor's limits on the worker budget and period (public/sysctl.h).
SCRUB_BUDGET_MIN_US = int(lib.PYXEN_SCRUB_BUDGET_MIN_US)
SCRUB_BUDGET_MAX_US = int(lib.PYXEN_SCRUB_BUDGET_MAX_US)
SCRUB_PERIOD_MIN_US = int(lib.PYXEN_SCRUB_PERIOD_MIN_US)
SCRUB_PERIOD_MAX_US = int(lib.PYXEN_SCRUB_PERIOD_MAX_US)
#: A worker's period is at least this many budgets (10: guests keep at least
#: nine tenths of the CPU).
SCRUB_PERIOD_PER_BUDGET = int(lib.PYXEN_SCRUB_PERIOD_PER_BUDGET)

_SCRUB_COUNTERS = tuple(f.name for f in fields(ScrubNodeStats) if f.name != "node")


def scrub_supported() -> bool:
    """Whether these bindings were built against a Xen with XEN_SYSCTL_scrub_op."""
    return bool(lib.PYXEN_SCRUB_SUPPORTED)


def check_scrub_timing(budget_us: int, period_us: int) -> None:
    """The hypervisor's rule for a worker budget and period, with a clear error."""
    for name, v in (("budget_us", budget_us), ("period_us", period_us)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if not SCRUB_BUDGET_MIN_US <= budget_us <= SCRUB_BUDGET_MAX_US:
        raise ValueError(f"budget_us {budget_us} is outside "
                         f"{SCRUB_BUDGET_MIN_US}..{SCRUB_BUDGET_MAX_US}")
    if not SCRUB_PERIOD_MIN_US <= period_us <= SCRUB_PERIOD_MAX_US:
        raise ValueError(f"period_us {period_us} is outside "
                         f"{SCRUB_PERIOD_MIN_US}..{SCRUB_PERIOD_MAX_US}")
    if budget_us * SCRUB_PERIOD_PER_BUDGET > period_us:
        raise ValueError(f"budget_us {budget_us} is more than 1/{SCRUB_PERIOD_PER_BUDGET} "
                         f"of period_us {period_us}")


class PageState(Enum):
    """A machine page's state as XEN_SYSCTL_page_offline_op reports it."""

    ONLINE = "online"
    OFFLINE_PENDING = "offline-pending"  # in use: taken off when its owner frees it
    OFFLINED = "offlined"


@dataclass(frozen=True)
class PageOffline:
    """What offlining one page did: taken off the heap at once (``OFFLINED``),
    or marked to be when its owner frees it (``OFFLINE_PENDING``, ``owner``
    the domain that holds it)."""

    state: PageState
    owner: int | None
    broken: bool


def _offline_result(mfn: int, status: int) -> PageOffline:
    code = status & lib.PG_OFFLINE_STATUS_MASK
    broken = bool(status & lib.PG_OFFLINE_BROKEN)
    if code == lib.PG_OFFLINE_OFFLINED:
        return PageOffline(PageState.OFFLINED, None, broken)
    if code == lib.PG_OFFLINE_PENDING:
        owner = status >> lib.PG_OFFLINE_OWNER_SHIFT if status & lib.PG_OFFLINE_OWNED else None
        return PageOffline(PageState.OFFLINE_PENDING, owner, broken)
    if code == lib.PG_OFFLINE_AGAIN:   # a broken guest page: Xen crashed its owner
        raise XenCtrlError("xc_mark_page_offline", errno.EAGAIN,
                           f"page {mfn:#x} is broken and owned: its owner was crashed, "
                           "offline it again once freed")
    raise XenCtrlError("xc_mark_page_offline", None,
                       f"page {mfn:#x}: unexpected offline status {status:#x}")


def _info(d: Any) -> DomainInfo:
    flags = int(d.flags)
    shutdown = bool(flags & lib.XEN_DOMINF_shutdown)
    return DomainInfo(
        domid=int(d.domain),
        dying=bool(flags & lib.XEN_DOMINF_dying),
        shutdown=shutdown,
        shutdown_reason=((flags >> lib.XEN_DOMINF_shutdownshift)
                         & lib.XEN_DOMINF_shutdownmask) if shutdown else None,
        paused=bool(flags & lib.XEN_DOMINF_paused),
        blocked=bool(flags & lib.XEN_DOMINF_blocked),
        running=bool(flags & lib.XEN_DOMINF_running),
        xenstore=bool(flags & lib.XEN_DOMINF_xs_domain),
        tot_pages=int(d.tot_pages),
        max_pages=int(d.max_pages),
        outstanding_pages=int(d.outstanding_pages),
        cpu_time_ns=int(d.cpu_time),
        online_vcpus=int(d.nr_online_vcpus),
        max_vcpus=int(d.max_vcpu_id) + 1,
        cpupool=int(d.cpupool),
    )


def _gated(function: str, *args: Any) -> Any:
    """``lib.<function>(*args)`` inside the shim's libxenctrl gate: no child
    of libxl's is forked while it runs, so none inherits a libxenctrl lock
    this call holds (shim.c, pyxen_xc_enter()).  ``ffi.errno`` stays the
    call's."""
    try:
        lib.pyxen_xc_enter()
        return getattr(lib, function)(*args)
    finally:
        lib.pyxen_xc_leave()


class XenCtrl(NativeHandle):
    """A libxenctrl handle.  Thread-safe (opened reentrant); close it, or use
    it as a context manager."""

    _what = "XenCtrl handle"
    _BATCH = 256

    def _open(self, logger: Any) -> Any:
        xch = _gated("xc_interface_open", logger, logger, 0)
        if xch == ffi.NULL:
            raise_xc("xc_interface_open")
        return xch

    def _close(self, handle: Any) -> None:
        _gated("xc_interface_close", handle)

    def _call(self, function: str, *args: Any) -> int:
        clear_message()
        return check_xc(_gated(function, self.handle, *args), function)

    # -- domains ----------------------------------------------------------
    def domains(self) -> list[DomainInfo]:
        """Every domain the hypervisor knows, dying ones included."""
        out: list[DomainInfo] = []
        buf = ffi.new("xc_domaininfo_t[]", self._BATCH)
        first = 0
        while True:
            n = self._call("xc_domain_getinfolist", first, self._BATCH, buf)
            out += [_info(buf[i]) for i in range(n)]
            if n < self._BATCH:
                return out
            first = int(buf[n - 1].domain) + 1

    def domain_info(self, domid: int) -> DomainInfo | None:
        """The domain with this id, or None if there is none."""
        buf = ffi.new("xc_domaininfo_t[1]")
        n = self._call("xc_domain_getinfolist", limits.domid(domid), 1, buf)
        if n == 1 and int(buf[0].domain) == domid:
            return _info(buf[0])
        return None

    def pause(self, domid: int) -> None:
        self._call("xc_domain_pause", limits.domid(domid))

    def unpause(self, domid: int) -> None:
        self._call("xc_domain_unpause", limits.domid(domid))

    def destroy(self, domid: int) -> None:
        """Hard destroy at hypervisor level (no toolstack cleanup: prefer
        ``Libxl.destroy`` for domains libxl created)."""
        self._call("xc_domain_destroy", limits.domid(domid))

    def claim_pages(self, domid: int, nr_pages: int) -> None:
        """Claim ``nr_pages`` for a domain being built (0 releases the claim)."""
        limits.unsigned(nr_pages, 64, "nr_pages")
        self._call("xc_domain_claim_pages", limits.domid(domid), nr_pages)

    def create_bare_domain(self, domid: int, max_vcpus: int = 1) -> int:
        """XEN_DOMCTL_createdomain and nothing else: an empty PV domain (no
        memory, no vCPU, no Xenstore entry) with ID ``domid``, for tests of
        the hypervisor's creation path.  (An explicit ID only: how to ask for
        any free one changed in Xen 4.21.)  Returns its ID; ``destroy``
        removes it.  ``max_vcpus`` is passed as given, so that a test can
        have Xen refuse it (0: EINVAL)."""
        limits.unsigned(max_vcpus, 32, "max_vcpus")
        config = ffi.new("struct xen_domctl_createdomain *")
        config.max_vcpus = max_vcpus
        config.max_evtchn_port = _BARE_EVTCHN_PORTS - 1
        config.max_grant_frames = -1     # Xen's defaults
        config.max_maptrack_frames = -1
        config.grant_opts = 1            # XEN_DOMCTL_GRANT_version(1)
        new = ffi.new("uint32_t *", limits.domid(domid))
        self._call("xc_domain_create", new, config)
        return int(new[0])

    # -- host -----------------------------------------------------------------
    def physinfo(self) -> PhysInfo:
        p = ffi.new("xc_physinfo_t *")
        self._call("xc_physinfo", p)
        return PhysInfo(int(p.nr_cpus), int(p.nr_nodes), int(p.threads_per_core),
                        int(p.cores_per_socket), int(p.cpu_khz), int(p.total_pages),
                        int(p.free_pages), int(p.scrub_pages), int(p.outstanding_pages))

    def numainfo(self) -> list[NumaNode]:
        n = ffi.new("unsigned *", 0)
        self._call("xc_numainfo", n, ffi.NULL, ffi.NULL)
        count = int(n[0])
        mem = ffi.new("xc_meminfo_t[]", count)
        dist = ffi.new("uint32_t[]", count * count)
        self._call("xc_numainfo", n, mem, dist)
        invalid = lib.XEN_INVALID_NODE_DIST
        return [NumaNode(i, int(mem[i].memsize), int(mem[i].memfree),
                         tuple(None if dist[i * count + j] == invalid else int(dist[i * count + j])
                               for j in range(count)))
                for i in range(int(n[0]))]

    def cpu_topology(self) -> list[CpuTopology]:
        n = ffi.new("unsigned *", 0)
        self._call("xc_cputopoinfo", n, ffi.NULL)
        topo = ffi.new("xc_cputopo_t[]", int(n[0]))
        self._call("xc_cputopoinfo", n, topo)
        return [CpuTopology(i, int(topo[i].core), int(topo[i].socket), int(topo[i].node))
                for i in range(int(n[0]))]

    # -- page offlining (XEN_SYSCTL_page_offline_op) --------------------------
    def offline_page(self, mfn: int) -> PageOffline:
        """Take a machine page out of use, as for a failing memory cell.  A
        free page leaves the heap at once; a page a domain holds is marked
        and leaves the heap when that domain frees it.  Xen refuses its own
        pages and dom0's (XenCtrlError, EPERM or EINVAL)."""
        status = ffi.new("uint32_t *", 0)
        self._call("xc_mark_page_offline", limits.mfn(mfn), mfn, status)
        return _offline_result(mfn, int(status[0]))

    def online_page(self, mfn: int) -> None:
        """Give an offlined (or offline-pending) page back to use.  A broken
        page cannot be (XenCtrlError, EINVAL)."""
        status = ffi.new("uint32_t *", 0)
        self._call("xc_mark_page_online", limits.mfn(mfn), mfn, status)

    def page_state(self, mfn: int) -> PageState:
        status = ffi.new("uint32_t *", 0)
        self._call("xc_query_page_offline_status", limits.mfn(mfn), mfn, status)
        bits = int(status[0])
        if bits & lib.PG_OFFLINE_STATUS_OFFLINE_PENDING:
            return PageState.OFFLINE_PENDING
        if bits & lib.PG_OFFLINE_STATUS_OFFLINED:
            return PageState.OFFLINED
        return PageState.ONLINE

    # -- console --------------------------------------------------------------
    _CONSOLE_BYTES = 1 << 20

    def send_debug_keys(self, keys: str) -> None:
        """Press Xen debug keys (e.g. 'H': heap dump); the output goes to the
        console ring (``read_console``)."""
        if not keys or not keys.isascii() or not keys.isprintable():
            raise ValueError(f"debug keys must be printable ASCII, got {keys!r}")
        self._call("xc_send_debug_keys", keys.encode())

    def read_console(self, clear: bool = False) -> str:
        """Xen's console ring (what ``xl dmesg`` shows); ``clear`` empties it."""
        buf = ffi.new("char[]", self._CONSOLE_BYTES)
        n = ffi.new("unsigned int *", self._CONSOLE_BYTES)
        self._call("xc_readconsolering", buf, n, int(clear), 0, ffi.NULL)
        return bytes(ffi.buffer(buf, int(n[0]))).decode(errors="replace")

    #: What Xen's keyhandler prints before the heap dump of debug key 'H'.
    _H_PRESSED = "'H' pressed"

    def heap_dump(self) -> str:
        """A fresh heap dump (debug key 'H', which Xen prints synchronously):
        the console ring from its last "'H' pressed" line on.  The ring is
        read, not cleared; pyxen.lab.contract.heapdump parses the text."""
        self.send_debug_keys("H")
        console = self.read_console()
        start = console.rfind(self._H_PRESSED)
        if start < 0:
            raise XenCtrlError("xc_send_debug_keys", errno.ENODATA,
                               "no 'H' heap dump in Xen's console ring")
        return console[start:]

    # -- scrubbing (XEN_SYSCTL_scrub_op) ---------------------------------------
    @staticmethod
    def _no_scrub(function: str) -> XenCtrlError:
        return XenCtrlError(function, errno.ENOSYS,
                            "XEN_SYSCTL_scrub_op is not supported by this Xen "
                            "(stock Xen has no scrub workers)")

    def _scrub_call(self, function: str, *args: Any) -> None:
        clear_message()
        if _gated(function, self.handle, *args) < 0:
            if ffi.errno == errno.ENOSYS:
                raise self._no_scrub(function)
            raise_xc(function)

    def scrub_state(self) -> ScrubState:
        """The scrub policy and every node's counters."""
        policy = ffi.new("uint32_t *")
        budget = ffi.new("uint32_t *")
        period = ffi.new("uint32_t *")
        n = ffi.new("unsigned int *", 0)
        self._scrub_call("pyxen_scrub_get", policy, budget, period, n, ffi.NULL)
        while True:
            count = int(n[0])
            buf = ffi.new("pyxen_scrub_node[]", max(count, 1))
            try:
                self._scrub_call("pyxen_scrub_get", policy, budget, period, n, buf)
                break
            except XenCtrlError as e:
                if e.errno != errno.ENOBUFS:  # a node came online in between: retry
                    raise
        codes = {p.code: p for p in ScrubPolicy}
        if int(policy[0]) not in codes:
            raise XenCtrlError("pyxen_scrub_get", None,
                               f"hypervisor reports unknown scrub policy {int(policy[0])}")
        return ScrubState(
            codes[int(policy[0])], int(budget[0]), int(period[0]),
            tuple(ScrubNodeStats(i, *(int(getattr(buf[i], c)) for c in _SCRUB_COUNTERS))
                  for i in range(int(n[0]))))

    def set_scrub_policy(self, policy: ScrubPolicy | str, budget_us: int | None = None,
                         period_us: int | None = None) -> None:
        """Set the policy; the budget and period are kept unless both are given.
        Bad values raise ValueError before reaching Xen (which also refuses
        them, EINVAL)."""
        if not scrub_supported():
            raise self._no_scrub("pyxen_scrub_set")
        p = ScrubPolicy.parse(policy)
        if (budget_us is None) != (period_us is None):
            raise ValueError("give both budget_us and period_us, or neither")
        if budget_us is not None and period_us is not None:
            check_scrub_timing(budget_us, period_us)
        self._scrub_call("pyxen_scrub_set", p.code, budget_us or 0, period_us or 0)
