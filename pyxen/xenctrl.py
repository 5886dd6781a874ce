"""libxenctrl: domain info, host physical and NUMA info, pause/unpause/destroy,
memory claims.  Every call releases the GIL (cffi does) so threads run in parallel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyxen._native import NativeHandle, check_xc, clear_message, ffi, lib, raise_xc

PAGE_SIZE = 4096
_PAGES_PER_MIB = (1 << 20) // PAGE_SIZE


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
    tot_pages: int
    max_pages: int
    outstanding_pages: int
    cpu_time_ns: int
    online_vcpus: int       # vCPUs up (a PV guest brings up its secondaries itself)
    max_vcpus: int          # vCPUs configured (max_vcpu_id + 1)
    cpupool: int

    @property
    def memory_mib(self) -> int:
        return self.tot_pages // _PAGES_PER_MIB


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
        return self.free_pages // _PAGES_PER_MIB


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
        tot_pages=int(d.tot_pages),
        max_pages=int(d.max_pages),
        outstanding_pages=int(d.outstanding_pages),
        cpu_time_ns=int(d.cpu_time),
        online_vcpus=int(d.nr_online_vcpus),
        max_vcpus=int(d.max_vcpu_id) + 1,
        cpupool=int(d.cpupool),
    )


def _domid(domid: int) -> int:
    if not isinstance(domid, int) or isinstance(domid, bool) or not 0 <= domid < 0x7FF0:
        raise ValueError(f"domid must be an integer 0..32751, got {domid!r}")
    return domid


class XenCtrl(NativeHandle):
    """A libxenctrl handle.  Thread-safe (opened reentrant); close it, or use
    it as a context manager."""

    _what = "XenCtrl handle"
    _BATCH = 256

    def _open(self, logger: Any) -> Any:
        xch = lib.xc_interface_open(logger, logger, 0)
        if xch == ffi.NULL:
            raise_xc("xc_interface_open")
        return xch

    def _close(self, handle: Any) -> None:
        lib.xc_interface_close(handle)

    def _call(self, function: str, *args: Any) -> int:
        clear_message()
        return check_xc(getattr(lib, function)(self.handle, *args), function, self._h)

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
        n = self._call("xc_domain_getinfolist", _domid(domid), 1, buf)
        if n == 1 and int(buf[0].domain) == domid:
            return _info(buf[0])
        return None

    def pause(self, domid: int) -> None:
        self._call("xc_domain_pause", _domid(domid))

    def unpause(self, domid: int) -> None:
        self._call("xc_domain_unpause", _domid(domid))

    def destroy(self, domid: int) -> None:
        """Hard destroy at hypervisor level (no toolstack cleanup: prefer
        ``Libxl.destroy`` for domains libxl created)."""
        self._call("xc_domain_destroy", _domid(domid))

    def claim_pages(self, domid: int, nr_pages: int) -> None:
        """Claim ``nr_pages`` for a domain being built (0 releases the claim)."""
        if not isinstance(nr_pages, int) or nr_pages < 0:
            raise ValueError(f"nr_pages must be a non-negative integer, got {nr_pages!r}")
        self._call("xc_domain_claim_pages", _domid(domid), nr_pages)

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
