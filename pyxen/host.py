"""The Pythonic layer: a Xen host and its domains.

    with pyxen.Host() as host:
        dom = host.create(DomainConfig(name="tg-1", kernel=Path("/srv/tinyguest")))
        print(dom.domid, dom.name, dom.memory_mib)
        dom.destroy()
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pyxen.config import DomainConfig
from pyxen.errors import DomainNotFound
from pyxen.libxl import LibxlPool
from pyxen.xenctrl import DomainInfo, NumaNode, PhysInfo, ScrubPolicy, ScrubState, XenCtrl
from pyxen.xenstore import XenStore


@dataclass(frozen=True)
class Domain:
    """A domain on a Host: its id, name and current memory."""

    host: Host
    domid: int
    name: str
    memory_mib: int

    def info(self) -> DomainInfo:
        info = self.host.xc.domain_info(self.domid)
        if info is None:
            raise DomainNotFound("domain_info", None, f"domain {self.domid} is gone")
        return info

    def pause(self) -> None:
        self.host.xc.pause(self.domid)

    def unpause(self) -> None:
        self.host.xc.unpause(self.domid)

    def destroy(self) -> None:
        self.host.xl.destroy(self.domid)

    def wait_death(self, timeout: float = 60.0) -> bool:
        """Wait until the hypervisor no longer knows the domain (fully torn
        down, not just dying).  True if it is gone within ``timeout`` s.

        Polls domain info every 50 ms: libxl's death events cannot be waited
        for with a timeout from a thread that does not own its event loop."""
        deadline = time.monotonic() + timeout
        while self.host.xc.domain_info(self.domid) is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


class Host:
    """The Xen host this process runs in (dom0).  Opens libxenctrl and libxl
    on entry and libxenstore on first use; safe to share between threads
    (libxl calls run on contexts lent by a LibxlPool)."""

    def __init__(self, xs_cache: bool = False) -> None:
        """``xs_cache``: libxl reads Xenstore through libxenstore's cache
        (a toolstack with LIBXL_CTX_XS_CACHE)."""
        self._xc: XenCtrl | None = None
        self._xs: XenStore | None = None
        self._xl: LibxlPool | None = None
        self._xs_cache = xs_cache
        self._xs_lock = threading.Lock()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Open libxenctrl and libxl; on failure nothing stays open (a later
        ``open()`` tries again)."""
        opened: list[XenCtrl | LibxlPool] = []
        try:
            if self._xc is None:
                self._xc = XenCtrl()
                opened.append(self._xc)
            if self._xl is None:
                self._xl = LibxlPool(xs_cache=self._xs_cache)
                opened.append(self._xl)
                with self._xl.lend():  # opens a first context now: errors surface here
                    pass
        except BaseException:
            for h in opened:
                h.close()
            if self._xc in opened:
                self._xc = None
            if self._xl in opened:
                self._xl = None
            raise

    def close(self) -> None:
        with self._xs_lock:
            handles: list[XenStore | LibxlPool | XenCtrl | None] = [self._xs, self._xl,
                                                                    self._xc]
            self._xc = self._xs = self._xl = None
        for h in handles:
            if h is not None:
                h.close()

    @property
    def xc(self) -> XenCtrl:
        if self._xc is None:
            raise ValueError("Host is not open (use 'with Host() as host:')")
        return self._xc

    @property
    def xl(self) -> LibxlPool:
        """libxl, safe to call from any number of threads at once."""
        if self._xl is None:
            raise ValueError("Host is not open (use 'with Host() as host:')")
        return self._xl

    @property
    def xenstore(self) -> XenStore:
        """libxenstore, opened on first use (by one thread, whichever asks first)."""
        with self._xs_lock:
            if self._xs is None:
                self._xs = XenStore()
            return self._xs

    # -- domains ----------------------------------------------------------
    def create(self, config: DomainConfig, paused: bool = False) -> Domain:
        """Create a PV domain (unpaused unless ``paused``).  Fails cleanly,
        leaving no half-created domain behind."""
        domid = self.xl.create(config, paused=paused)
        try:
            return Domain(self, domid, config.name, config.memory_mib)
        except BaseException:  # interrupted before the caller has its handle
            self.xl.destroy_quietly(domid)
            raise

    def domains(self) -> list[Domain]:
        """Every domain libxl lists, dom0 included, with names."""
        out = []
        for d in self.xl.list():
            try:
                name = self.xl.domid_to_name(d.domid)
            except DomainNotFound:  # went away between list and lookup
                continue
            out.append(Domain(self, d.domid, name, d.current_memkb // 1024))
        return out

    def domain(self, name_or_id: str | int) -> Domain:
        if isinstance(name_or_id, int):
            domid = name_or_id
            name = self.xl.domid_to_name(domid)
        else:
            domid = self.xl.name_to_domid(name_or_id)
            name = name_or_id
        info = self.xc.domain_info(domid)
        if info is None:
            raise DomainNotFound("domain", None, f"no domain {name_or_id!r}")
        return Domain(self, domid, name, info.memory_mib)

    # -- host info --------------------------------------------------------
    def physinfo(self) -> PhysInfo:
        return self.xc.physinfo()

    def numainfo(self) -> list[NumaNode]:
        return self.xc.numainfo()

    def scrub_state(self) -> ScrubState:
        """Scrub policy and per-node counters (patched Xen: XEN_SYSCTL_scrub_op)."""
        return self.xc.scrub_state()

    def set_scrub_policy(self, policy: ScrubPolicy | str, budget_us: int | None = None,
                         period_us: int | None = None) -> None:
        self.xc.set_scrub_policy(policy, budget_us, period_us)

    def free_memory_mib(self) -> int:
        return self.xc.physinfo().free_mib
