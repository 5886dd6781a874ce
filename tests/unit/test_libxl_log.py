"""What libxl logs for a call reaches that call's exception, from whichever
thread it was logged (shim.c, the per-handle loggers): libxl logs from the
calling thread and from the shim's reaper threads, which run the callbacks of
the call's forked children.  And the reaper threads get a full-size stack.

No hypervisor: a Libxl whose context is never opened, libxl's entry points
replaced by stand-ins that log through the real logger with libxentoollog's
xtl_log() (loaded with ctypes, so that these tests also run, and fail, on a
build whose logger keeps one buffer per thread)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import resource
import threading
from typing import Any

import pytest

_native = pytest.importorskip("pyxen._native", reason="pyxen._xen not built (pip install .)")

from pyxen import libxl  # noqa: E402
from pyxen.errors import LibxlError  # noqa: E402

ffi = _native.ffi
lib = _native.lib

# xentoollog.h: XTL_NONE, DEBUG, VERBOSE, DETAIL, PROGRESS, INFO, NOTICE, WARN,
# ERROR, CRITICAL.
XTL_WARN = 7
XTL_ERROR = 8

_xtl = ctypes.CDLL(ctypes.util.find_library("xentoollog") or "libxentoollog.so.1")
_xtl.xtl_log.restype = None


def xtl_log(logger: Any, text: str, level: int = XTL_ERROR, errnoval: int = -1,
            context: bytes = b"libxl") -> None:
    """What libxl's LOG macros end in: xtl_log(ctx->lg, ...)."""
    _xtl.xtl_log(ctypes.c_void_p(int(ffi.cast("uintptr_t", logger))), ctypes.c_int(level),
                 ctypes.c_int(errnoval), ctypes.c_char_p(context), ctypes.c_char_p(b"%s"),
                 ctypes.c_char_p(text.encode()))


def on_another_thread(fn: Any) -> None:
    t = threading.Thread(target=fn)
    t.start()
    t.join()


class LibStandIn:
    """pyxen.libxl's ``lib`` with some functions replaced."""

    def __init__(self, **replaced: Any) -> None:
        self._replaced = replaced

    def __getattr__(self, name: str) -> Any:
        if name in self._replaced:
            return self._replaced[name]
        return getattr(lib, name)


@pytest.fixture
def xl(monkeypatch):
    """A Libxl with its real logger and no libxl context behind it."""
    monkeypatch.setattr(libxl.Libxl, "_open", lambda self, logger: ffi.cast("void *", 1))
    monkeypatch.setattr(libxl.Libxl, "_close", lambda self, handle: None)
    ctx = libxl.Libxl()
    yield ctx
    ctx.close()


def test_what_a_reaper_thread_logs_reaches_the_calls_exception(xl, monkeypatch):
    def destroy(ctx: Any, domid: int, ao_how: Any) -> int:
        # The destroyer child failed; its reaper thread runs libxl's callback,
        # which logs the root cause; then the calling thread logs the result.
        on_another_thread(lambda: xtl_log(xl._logger, "xc_domain_destroy failed",
                                          errnoval=errno.EBUSY))
        xtl_log(xl._logger, "Destruction of domain 7 failed")
        return -3  # ERROR_FAIL

    xtl_log(xl._logger, "left over from an earlier call")
    monkeypatch.setattr(libxl, "lib", LibStandIn(libxl_domain_destroy=destroy))
    with pytest.raises(LibxlError) as info:
        xl.destroy(7)
    assert info.value.code_name == "ERROR_FAIL"
    # Root cause first, the earlier call's message gone.
    assert info.value.message == ("libxl: xc_domain_destroy failed: Device or resource busy\n"
                                  "libxl: Destruction of domain 7 failed (ERROR_FAIL)")


def test_a_create_failing_in_a_reaper_keeps_the_root_cause(xl, monkeypatch, tmp_path):
    from pyxen.config import DomainConfig

    def create(ctx: Any, d: Any, domid: Any, ao_how: Any, aop: Any) -> int:
        on_another_thread(lambda: xtl_log(xl._logger, "bootloader failed"))
        on_another_thread(lambda: xtl_log(xl._logger, "ignored warning", level=XTL_WARN))
        xtl_log(xl._logger, "cannot (re-)build domain: -3")
        return -3

    monkeypatch.setattr(libxl, "lib", LibStandIn(
        libxl_domain_create_new=create,
        libxl_cpu_bitmap_alloc=lambda ctx, bitmap, n: 0,
        libxl_bitmap_set=lambda bitmap, i: None))
    with pytest.raises(LibxlError) as info:
        kernel = tmp_path / "kernel"
        kernel.write_bytes(b"")
        xl.create(DomainConfig(name="t", kernel=kernel, memory_mib=16))
    assert info.value.message == ("libxl: bootloader failed\n"
                                  "libxl: cannot (re-)build domain: -3 (ERROR_FAIL)")


def test_threads_logging_at_once_keep_whole_lines(xl):
    """The buffer is shared between threads: every line is kept, none torn."""
    threads, each = 4, 150  # 600 lines of 9 bytes: they all fit
    lines = sorted(f"t{t} m{i:03}" for t in range(threads) for i in range(each))
    for _ in range(200):  # a race lost once is enough
        xl.clear_message()
        start = threading.Barrier(threads)

        def log_all(t: int) -> None:
            start.wait()
            for i in range(each):
                xtl_log(xl._logger, f"t{t} m{i:03}", context=None)  # type: ignore[arg-type]

        workers = [threading.Thread(target=log_all, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(xl.message().split("\n")) == lines


def test_a_full_buffer_keeps_the_first_messages_and_stays_terminated(xl):
    xl.clear_message()
    xtl_log(xl._logger, "the root cause")
    xtl_log(xl._logger, "x" * 50000)  # longer than the whole buffer
    xtl_log(xl._logger, "lost")
    msg = xl.message()
    assert msg.startswith("libxl: the root cause\nlibxl: xxx")
    assert "lost" not in msg
    assert len(msg) == lib.PYXEN_MSG_LEN - 1
    xl.clear_message()
    assert xl.message() == ""
    xtl_log(xl._logger, "after clearing")
    assert xl.message() == "libxl: after clearing"


def test_reaper_threads_get_a_full_size_stack():
    """libxl's callbacks run on the reapers' stacks: not a small one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    floor = 1 << 20 if soft == resource.RLIM_INFINITY else min(soft, 1 << 20)
    assert lib.pyxen_reaper_stack_size() >= floor
