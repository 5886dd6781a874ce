"""libxenlight: create PV domains from a DomainConfig, destroy, list, names.

Every call releases the GIL, so Python threads create and destroy in
parallel: a LibxlPool lends each call a context no other call is using.  libxl's child
processes are reaped by the C shim -- a thread per child waiting for that pid
-- not by libxl's SIGCHLD handler (shim.c says why), so Python's own
subprocesses are never touched.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyxen import limits
from pyxen._native import FORKED, NativeHandle, check_libxl, ffi, lib, string, track_for_fork
from pyxen.config import DomainConfig, check_weight_scheduler
from pyxen.errors import DomainNotFound, LibxlError, XenError, XenstoreError

log = logging.getLogger(__name__)

_ACTIONS = {"destroy": "LIBXL_ACTION_ON_SHUTDOWN_DESTROY",
            "preserve": "LIBXL_ACTION_ON_SHUTDOWN_PRESERVE"}
_NO_DOMID = 0xFFFFFFFF
#: libxl_domain_destroy() calls made when the previous one's destroyer child
#: was found deadlocked (shim.c, pyxen_watch_child) and killed.  On a stock
#: toolstack a fork() while other threads make hypercalls inherits
#: libxencall's buffer-cache mutex locked about half the time (three threads
#: pairing pause/unpause: three deadlocked children in a row in 3 of about 40
#: destroys, and once ten), so three attempts were too few; each costs about
#: a second.  pyxen's own libxenctrl calls no longer take part: they and
#: libxl's forks take the shim's gate (pyxen_xc_enter()); what is left is
#: libxl's calls in other threads, whose hypercalls the gate does not see.
_DESTROY_ATTEMPTS = 10


def deadlocked_children() -> int:
    """How many of libxl's forked children this process found deadlocked and
    killed: children that, before any exec, sleep on a library lock they
    inherited locked from another thread (stock libxencall and libxentoolcore do not guard their
    locks across fork(); the toolstack series' "tools/libs: hold the Xen
    libraries' process-wide locks across fork()" does).  pyxen repeats a
    destroy whose child was killed so; on a patched toolstack this stays 0."""
    return int(lib.pyxen_deadlocked_children())


@dataclass(frozen=True)
class DomInfo:
    """A domain as libxl lists it."""

    domid: int
    running: bool
    blocked: bool
    paused: bool
    shutdown: bool
    dying: bool
    current_memkb: int
    max_memkb: int
    outstanding_memkb: int
    cpu_time_ns: int
    vcpu_online: int


def _strdup(raw: bytes) -> Any:
    """A malloc'd copy for a libxl_domain_config field (its dispose frees it)."""
    p = lib.strdup(raw)
    if p == ffi.NULL:
        raise MemoryError("strdup")
    return p


def _check_files(cfg: DomainConfig) -> None:
    """The kernel and ramdisk must be files before a domain is made: libxl
    would create the domain, fail to load them and destroy it again."""
    for what, path in (("kernel", cfg.kernel), ("ramdisk", cfg.ramdisk)):
        if path is not None and not path.is_file():
            raise FileNotFoundError(errno.ENOENT, f"{what} is not a file", str(path))


def xs_cache_supported() -> bool:
    """Whether these bindings' libxl takes LIBXL_CTX_XS_CACHE."""
    return bool(lib.PYXEN_LIBXL_CTX_XS_CACHE)


def _check_xs_cache(xs_cache: bool) -> None:
    if xs_cache and not xs_cache_supported():
        raise ValueError("xs_cache needs a libxl with LIBXL_CTX_XS_CACHE "
                         "(libxenstore's cache of reads); this one has none")


class Libxl(NativeHandle):
    """A libxl context.  Close it, or use it as a context manager."""

    _what = "libxl context"
    # libxl logs a call's errors from the calling thread and from the shim's
    # reaper threads (its children's callbacks): one buffer per context, for
    # the call it serves, so both reach that call's exception.
    _per_handle_log = True

    def __init__(self, xs_cache: bool = False) -> None:
        """``xs_cache``: read Xenstore through libxenstore's cache
        (LIBXL_CTX_XS_CACHE, a toolstack with the cache patches)."""
        _check_xs_cache(xs_cache)
        self._flags = int(lib.PYXEN_LIBXL_CTX_XS_CACHE) if xs_cache else 0
        super().__init__()

    def _open(self, logger: Any) -> Any:
        pctx = ffi.new("libxl_ctx **")
        check_libxl(lib.libxl_ctx_alloc(pctx, lib.LIBXL_VERSION, self._flags, logger),
                    "libxl_ctx_alloc", self)
        # libxl's children are reaped by the shim, not by a SIGCHLD handler;
        # what the reapers log goes to this context's logger.
        lib.pyxen_childproc_setmode(pctx[0], logger)
        return pctx[0]

    def _close(self, handle: Any) -> None:
        lib.pyxen_childproc_quiesce()
        lib.libxl_ctx_free(handle)

    @property
    def ctx(self) -> Any:
        return self.handle

    # -- create / destroy ----------------------------------------------------
    def _fill(self, d: Any, cfg: DomainConfig) -> None:
        self.clear_message()
        d.c_info.type = lib.LIBXL_DOMAIN_TYPE_PV
        d.c_info.name = _strdup(cfg.name.encode())
        # A UUID of its own, as xl gives every domain: libxl keeps the
        # domain's /vm/<uuid> by it, and does not make one up itself.
        ffi.memmove(d.c_info.uuid.uuid, uuid.uuid4().bytes, 16)
        b = d.b_info
        lib.libxl_domain_build_info_init_type(ffi.addressof(b), lib.LIBXL_DOMAIN_TYPE_PV)
        b.max_vcpus = cfg.vcpus
        check_libxl(lib.libxl_cpu_bitmap_alloc(self.ctx, ffi.addressof(b.avail_vcpus),
                                               cfg.vcpus), "libxl_cpu_bitmap_alloc", self)
        for i in range(cfg.vcpus):
            lib.libxl_bitmap_set(ffi.addressof(b.avail_vcpus), i)
        b.max_memkb = cfg.max_memory_mib * 1024
        b.target_memkb = cfg.memory_mib * 1024
        if cfg.nodes is not None:
            check_libxl(lib.libxl_node_bitmap_alloc(self.ctx, ffi.addressof(b.nodemap),
                                                    max(cfg.nodes) + 1),
                        "libxl_node_bitmap_alloc", self)
            for n in cfg.nodes:
                lib.libxl_bitmap_set(ffi.addressof(b.nodemap), n)
            lib.libxl_defbool_set(ffi.addressof(b.numa_placement), False)
        if cfg.weight is not None:
            # libxl applies the build's scheduling parameters before the
            # domain first runs; under a scheduler without weights it would
            # drop this one silently.
            check_weight_scheduler(self.scheduler())
            b.sched_params.weight = cfg.weight
        b.kernel = _strdup(os.fsencode(cfg.kernel))
        if cfg.cmdline:
            b.cmdline = _strdup(cfg.cmdline.encode())
        if cfg.ramdisk is not None:
            b.ramdisk = _strdup(os.fsencode(cfg.ramdisk))
        d.on_poweroff = getattr(lib, _ACTIONS[cfg.on_poweroff])
        d.on_reboot = getattr(lib, _ACTIONS[cfg.on_reboot])
        d.on_watchdog = lib.LIBXL_ACTION_ON_SHUTDOWN_DESTROY
        d.on_crash = getattr(lib, _ACTIONS[cfg.on_crash])

    def create(self, cfg: DomainConfig, paused: bool = False) -> int:
        """Create a PV domain and return its id; unpaused unless ``paused``.

        On any failure nothing is left behind: libxl destroys a domain whose
        build failed, and a domain that was built but could not be unpaused
        is destroyed here before the error is raised.  So is a domain built
        when any other exception (a KeyboardInterrupt, which Python raises
        after libxl's call returns) arrives before its id is returned.
        """
        if not isinstance(cfg, DomainConfig):
            raise TypeError(f"expected a DomainConfig, got {type(cfg).__name__}")
        _check_files(cfg)
        d = ffi.new("libxl_domain_config *")
        lib.libxl_domain_config_init(d)
        domid = ffi.new("uint32_t *", _NO_DOMID)
        built = False
        deadlocks = 0
        try:
            try:
                self._fill(d, cfg)
                deadlocks = deadlocked_children()
                self.clear_message()
                check_libxl(lib.libxl_domain_create_new(self.ctx, d, domid, ffi.NULL, ffi.NULL),
                            "libxl_domain_create_new", self)
                built = True
            finally:
                lib.libxl_domain_config_dispose(d)
            if not paused:
                self.unpause(int(domid[0]))
            return int(domid[0])
        except XenError:
            if built:  # the unpause failed
                self._destroy_quietly(int(domid[0]))
            elif domid[0] != _NO_DOMID and deadlocked_children() != deadlocks:
                # libxl destroys what it built, in a forked child; if that
                # child was killed deadlocked, the domain is still there.
                # (The count is the process's: the killed child may have
                # been another thread's, and this domain gone.)
                self._destroy_quietly(int(domid[0]), missing_ok=True)
            raise
        except BaseException:
            # Interrupted: libxl may have built the domain (its id is set
            # once it exists) whether or not its return code was seen.
            if domid[0] != _NO_DOMID:
                self._destroy_quietly(int(domid[0]), missing_ok=not built)
            raise

    def _destroy_quietly(self, domid: int, missing_ok: bool = False) -> None:
        """Destroy a half-created domain, logging (not raising) a failure: the
        original error is the one to report.  ``missing_ok``: libxl may have
        destroyed it already."""
        try:
            self.destroy(domid)
        except DomainNotFound:
            if not missing_ok:
                log.error("could not destroy half-created domain %d: it is gone", domid)
        except XenError as exc:
            log.error("could not destroy half-created domain %d: %s", domid, exc)

    def unpause(self, domid: int) -> None:
        limits.domid(domid)
        self.clear_message()
        check_libxl(lib.libxl_domain_unpause(self.ctx, domid, ffi.NULL),
                    "libxl_domain_unpause", self)

    def destroy(self, domid: int) -> None:
        """Destroy a domain and clean up its devices and Xenstore nodes."""
        if limits.domid(domid) == 0:
            raise ValueError("domid must not be 0: dom0 cannot be destroyed")
        for attempt in range(1, _DESTROY_ATTEMPTS + 1):
            deadlocks = deadlocked_children()
            self.clear_message()
            try:
                check_libxl(lib.libxl_domain_destroy(self.ctx, domid, ffi.NULL),
                            "libxl_domain_destroy", self)
                return
            except DomainNotFound:
                if attempt == 1:
                    raise
                return  # an earlier attempt's child destroyed it after all
            except LibxlError:
                if attempt == _DESTROY_ATTEMPTS or deadlocked_children() == deadlocks:
                    raise
                log.warning("destroy of domain %d: libxl's destroyer child deadlocked "
                            "(a library lock inherited locked at fork) and was killed; "
                            "destroying again (attempt %d)", domid, attempt + 1)

    def scheduler(self) -> str:
        """libxl's name of the scheduler new domains run under (cpupool 0's:
        pyxen creates no domain in another pool), e.g. 'credit2'."""
        self.clear_message()
        sched = lib.libxl_get_scheduler(self.ctx)
        if sched < 0:
            check_libxl(int(sched), "libxl_get_scheduler", self)
        name = lib.libxl_scheduler_to_string(sched)
        return "unknown" if name == ffi.NULL else string(name)

    # -- listing and names -----------------------------------------------------
    def list(self) -> list[DomInfo]:
        n = ffi.new("int *")
        self.clear_message()
        ffi.errno = 0           # not a stale one from an earlier call
        infos = lib.libxl_list_domain(self.ctx, n)
        if infos == ffi.NULL:
            raise LibxlError("libxl_list_domain", lib.ERROR_FAIL, "ERROR_FAIL", ffi.errno or None,
                             self.message() or "listing domains failed")
        try:
            return [DomInfo(int(i.domid), bool(i.running), bool(i.blocked), bool(i.paused),
                            bool(i.shutdown), bool(i.dying), int(i.current_memkb),
                            int(i.max_memkb), int(i.outstanding_memkb), int(i.cpu_time),
                            int(i.vcpu_online))
                    for i in (infos[k] for k in range(n[0]))]
        finally:
            lib.libxl_dominfo_list_free(infos, n[0])

    def name_to_domid(self, name: str) -> int:
        # Any name libxl holds (xl gives names pyxen's own creates would
        # refuse), but C would read only up to a NUL.
        if not isinstance(name, str) or "\0" in name:
            raise ValueError(f"a domain name is a string without NUL, got {name!r}")
        domid = ffi.new("uint32_t *")
        self.clear_message()
        rc = lib.libxl_name_to_domid(self.ctx, name.encode(), domid)
        if rc == lib.ERROR_INVAL:  # libxl's answer when no domain has the name
            raise DomainNotFound("libxl_name_to_domid", None, f"no domain named {name!r}")
        check_libxl(rc, "libxl_name_to_domid", self)  # listing the domains failed
        return int(domid[0])

    def domid_to_name(self, domid: int) -> str:
        limits.domid(domid)
        self.clear_message()
        ffi.errno = 0
        p = lib.libxl_domid_to_name(self.ctx, domid)   # xs_read of the domain's name
        if p == ffi.NULL:
            err = ffi.errno
            if err == errno.ENOENT:  # gone, or never named (a bare domain)
                raise DomainNotFound("libxl_domid_to_name", err,
                                     f"no domain {domid} with /local/domain/{domid}/name")
            raise XenstoreError("libxl_domid_to_name", err or None,
                                f"reading /local/domain/{domid}/name failed")
        try:
            return string(p)
        finally:
            lib.free(p)


class LibxlPool:
    """libxl for many threads: each call borrows a context that no other call
    is using and gives it back when it returns.

    In a child made by os.fork() a pool opened before the fork is closed
    (its calls raise ValueError): the child opens its own.

    Why not one shared context: libxl forks in some operations (the destroyer
    child of libxl_domain_destroy), and the child frees its context's
    Xenstore handle (xs_daemon_destroy_postfork) with no regard for other
    threads using that handle at that instant, which corrupts the child's
    heap (seen here as "malloc(): unsorted double linked list corrupted" and
    ERROR_FAIL from the destroy).  With a context used by one call at a time,
    what the child frees was only ever that call's -- xl's model, one context
    per process.

    Why not a context per thread: a program that runs its calls on
    short-lived threads (a ThreadPoolExecutor per batch) would open a context
    per thread ever started, each with its Xenstore connection and event
    channel and privcmd descriptors, until the process ran out of them.  The
    pool holds as many contexts as calls ever ran at once, and keeps at most
    ``max_idle`` of them open between calls.
    """

    def __init__(self, max_idle: int = 8, xs_cache: bool = False) -> None:
        if max_idle < 1:
            raise ValueError(f"max_idle must be at least 1, got {max_idle}")
        _check_xs_cache(xs_cache)
        self._max_idle = max_idle
        self._xs_cache = xs_cache
        self._lock = threading.Lock()
        self._idle: list[Libxl] = []
        self._lent = 0
        self._closed = False
        self._inherited = False
        track_for_fork(self)

    def _forked(self) -> None:
        """In a child of os.fork(): closed, its contexts (the parent's) dropped
        unfreed, with a fresh lock (another thread may have held the
        parent's at the fork); see pyxen._native._after_fork_in_child()."""
        self._lock = threading.Lock()
        self._idle = []
        self._lent = 0
        self._closed = self._inherited = True

    @contextmanager
    def lend(self) -> Iterator[Libxl]:
        """A context for the caller alone until the block ends."""
        with self._lock:
            if self._inherited:
                raise ValueError(f"libxl pool {FORKED}")
            if self._closed:
                raise ValueError("libxl pool is closed")
            xl = self._idle.pop() if self._idle else None
            self._lent += 1
        try:
            if xl is None:
                xl = Libxl(xs_cache=self._xs_cache)
        except BaseException:
            with self._lock:
                self._lent -= 1
            raise
        try:
            yield xl
        finally:
            with self._lock:
                # Lent before a fork and given back in the child: the
                # parent's, neither kept nor freed here.
                keep: bool = self._inherited
                if not keep:
                    self._lent -= 1
                    keep = not self._closed and len(self._idle) < self._max_idle
                    if keep:
                        self._idle.append(xl)
            if not keep:
                xl.close()

    @property
    def open_contexts(self) -> int:
        """Contexts open now: idle ones plus those lent out."""
        with self._lock:
            return len(self._idle) + self._lent

    def close(self) -> None:
        """Close the idle contexts; lent ones are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for xl in idle:
            xl.close()

    # The Libxl calls, each on a borrowed context.
    def create(self, cfg: DomainConfig, paused: bool = False) -> int:
        domid = None
        try:
            with self.lend() as xl:
                domid = xl.create(cfg, paused=paused)
            return domid
        except BaseException:
            # Interrupted while the context was given back: the domain is
            # made, its id not yet the caller's.
            if domid is not None:
                self.destroy_quietly(domid)
            raise

    def destroy_quietly(self, domid: int) -> None:
        """Destroy a half-created domain, logging a failure rather than
        raising it (the error being handled is the one to report)."""
        with self.lend() as xl:
            xl._destroy_quietly(domid)

    def destroy(self, domid: int) -> None:
        with self.lend() as xl:
            xl.destroy(domid)

    def unpause(self, domid: int) -> None:
        with self.lend() as xl:
            xl.unpause(domid)

    def list(self) -> list[DomInfo]:
        with self.lend() as xl:
            return xl.list()

    def scheduler(self) -> str:
        with self.lend() as xl:
            return xl.scheduler()

    def name_to_domid(self, name: str) -> int:
        with self.lend() as xl:
            return xl.name_to_domid(name)

    def domid_to_name(self, domid: int) -> str:
        with self.lend() as xl:
            return xl.domid_to_name(domid)
