"""libxenlight: create PV domains from a DomainConfig, destroy, list, names.

Every call releases the GIL, so Python threads create and destroy in
parallel (pyxen.host.Host gives each thread its own context).  libxl's child
processes are reaped by the C shim -- a thread per child waiting for that pid
-- not by libxl's SIGCHLD handler (shim.c says why), so Python's own
subprocesses are never touched.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from pyxen._native import NativeHandle, check_libxl, clear_message, ffi, lib, string
from pyxen.config import DomainConfig
from pyxen.errors import DomainNotFound, LibxlError, XenError

log = logging.getLogger(__name__)

_ACTIONS = {"destroy": "LIBXL_ACTION_ON_SHUTDOWN_DESTROY",
            "preserve": "LIBXL_ACTION_ON_SHUTDOWN_PRESERVE"}


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


class Libxl(NativeHandle):
    """A libxl context.  Close it, or use it as a context manager."""

    _what = "libxl context"

    def _open(self, logger: Any) -> Any:
        pctx = ffi.new("libxl_ctx **")
        check_libxl(lib.libxl_ctx_alloc(pctx, lib.LIBXL_VERSION, 0, logger),
                    "libxl_ctx_alloc")
        # libxl's children are reaped by the shim, not by a SIGCHLD handler.
        lib.pyxen_childproc_setmode(pctx[0])
        return pctx[0]

    def _close(self, handle: Any) -> None:
        lib.pyxen_childproc_quiesce()
        lib.libxl_ctx_free(handle)

    @property
    def ctx(self) -> Any:
        return self.handle

    # -- create / destroy ----------------------------------------------------
    def _fill(self, d: Any, cfg: DomainConfig) -> None:
        d.c_info.type = lib.LIBXL_DOMAIN_TYPE_PV
        d.c_info.name = lib.strdup(cfg.name.encode())
        # A UUID of its own, as xl gives every domain: libxl keeps the
        # domain's /vm/<uuid> by it, and does not make one up itself.
        ffi.memmove(d.c_info.uuid.uuid, uuid.uuid4().bytes, 16)
        b = d.b_info
        lib.libxl_domain_build_info_init_type(ffi.addressof(b), lib.LIBXL_DOMAIN_TYPE_PV)
        b.max_vcpus = cfg.vcpus
        check_libxl(lib.libxl_cpu_bitmap_alloc(self.ctx, ffi.addressof(b.avail_vcpus),
                                               cfg.vcpus), "libxl_cpu_bitmap_alloc")
        for i in range(cfg.vcpus):
            lib.libxl_bitmap_set(ffi.addressof(b.avail_vcpus), i)
        b.max_memkb = cfg.max_memory_mib * 1024
        b.target_memkb = cfg.memory_mib * 1024
        if cfg.nodes is not None:
            check_libxl(lib.libxl_node_bitmap_alloc(self.ctx, ffi.addressof(b.nodemap),
                                                    max(cfg.nodes) + 1),
                        "libxl_node_bitmap_alloc")
            for n in cfg.nodes:
                lib.libxl_bitmap_set(ffi.addressof(b.nodemap), n)
            lib.libxl_defbool_set(ffi.addressof(b.numa_placement), False)
        b.kernel = lib.strdup(str(cfg.kernel).encode())
        if cfg.cmdline:
            b.cmdline = lib.strdup(cfg.cmdline.encode())
        if cfg.ramdisk is not None:
            b.ramdisk = lib.strdup(str(cfg.ramdisk).encode())
        d.on_poweroff = getattr(lib, _ACTIONS[cfg.on_poweroff])
        d.on_reboot = getattr(lib, _ACTIONS[cfg.on_reboot])
        d.on_watchdog = lib.LIBXL_ACTION_ON_SHUTDOWN_DESTROY
        d.on_crash = getattr(lib, _ACTIONS[cfg.on_crash])

    def create(self, cfg: DomainConfig, paused: bool = False) -> int:
        """Create a PV domain and return its id; unpaused unless ``paused``.

        On any failure nothing is left behind: libxl destroys a domain whose
        build failed, and a domain that was built but could not be unpaused
        is destroyed here before the error is raised.
        """
        if not isinstance(cfg, DomainConfig):
            raise TypeError(f"expected a DomainConfig, got {type(cfg).__name__}")
        d = ffi.new("libxl_domain_config *")
        lib.libxl_domain_config_init(d)
        try:
            self._fill(d, cfg)
            domid = ffi.new("uint32_t *", 0xFFFFFFFF)
            clear_message()
            check_libxl(lib.libxl_domain_create_new(self.ctx, d, domid, ffi.NULL, ffi.NULL),
                        "libxl_domain_create_new")
        finally:
            lib.libxl_domain_config_dispose(d)
        new = int(domid[0])
        if not paused:
            try:
                self.unpause(new)
            except XenError:
                self._destroy_quietly(new)
                raise
        return new

    def _destroy_quietly(self, domid: int) -> None:
        try:
            self.destroy(domid)
        except XenError as exc:  # the original error is the one to report
            log.error("could not destroy half-created domain %d: %s", domid, exc)

    def unpause(self, domid: int) -> None:
        clear_message()
        check_libxl(lib.libxl_domain_unpause(self.ctx, domid, ffi.NULL),
                    "libxl_domain_unpause")

    def destroy(self, domid: int) -> None:
        """Destroy a domain and clean up its devices and Xenstore nodes."""
        if not isinstance(domid, int) or isinstance(domid, bool) or domid <= 0:
            raise ValueError(f"domid must be a positive integer (not dom0), got {domid!r}")
        clear_message()
        check_libxl(lib.libxl_domain_destroy(self.ctx, domid, ffi.NULL),
                    "libxl_domain_destroy")

    # -- listing and names -----------------------------------------------------
    def list(self) -> list[DomInfo]:
        n = ffi.new("int *")
        clear_message()
        infos = lib.libxl_list_domain(self.ctx, n)
        if infos == ffi.NULL:
            raise LibxlError("libxl_list_domain", lib.ERROR_FAIL, "ERROR_FAIL", ffi.errno or None,
                             "listing domains failed")
        try:
            return [DomInfo(int(i.domid), bool(i.running), bool(i.blocked), bool(i.paused),
                            bool(i.shutdown), bool(i.dying), int(i.current_memkb),
                            int(i.max_memkb), int(i.outstanding_memkb), int(i.cpu_time),
                            int(i.vcpu_online))
                    for i in (infos[k] for k in range(n[0]))]
        finally:
            lib.libxl_dominfo_list_free(infos, n[0])

    def name_to_domid(self, name: str) -> int:
        domid = ffi.new("uint32_t *")
        clear_message()
        rc = lib.libxl_name_to_domid(self.ctx, name.encode(), domid)
        if rc != 0:
            raise DomainNotFound("libxl_name_to_domid", None, f"no domain named {name!r}")
        return int(domid[0])

    def domid_to_name(self, domid: int) -> str:
        clear_message()
        p = lib.libxl_domid_to_name(self.ctx, domid)
        if p == ffi.NULL:
            raise DomainNotFound("libxl_domid_to_name", None, f"no domain {domid}")
        try:
            return string(p)
        finally:
            lib.free(p)
