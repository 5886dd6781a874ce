"""Loading pyxen._xen (the cffi module) and turning return codes into exceptions.

``PYXEN_NATIVE`` may name another build of the module (a file path): the lab
uses it in dom0 to load bindings compiled against the staged Xen's headers.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import weakref
from types import TracebackType
from typing import Any, NoReturn, Self

from pyxen._ffi import NATIVE_ENV
from pyxen.errors import DomainNotFound, LibxlError, XenCtrlError, XenstoreError


def _load() -> Any:
    override = os.environ.get(NATIVE_ENV)
    if override:
        spec = importlib.util.spec_from_file_location("pyxen._xen", override)
        if spec is None or spec.loader is None:
            raise ImportError(f"{NATIVE_ENV}={override} is not a loadable module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    from pyxen import _xen
    return _xen


_mod = _load()
ffi: Any = _mod.ffi
lib: Any = _mod.lib


def last_message() -> str:
    """The error-level messages the libraries logged on this thread, through
    per-thread loggers (``XenCtrl``'s), since the last ``clear_message()``,
    oldest (usually the root cause) first."""
    return str(ffi.string(lib.pyxen_last_message()).decode(errors="replace"))


def clear_message() -> None:
    lib.pyxen_clear_message()


def string(ptr: Any) -> str:
    return str(ffi.string(ptr).decode(errors="replace"))


def raise_xc(function: str) -> NoReturn:
    """Raise for a failed libxenctrl call: its errno, and what it logged on
    this thread.  (libxenctrl's own last error, xc_get_last_error(), adds
    nothing: everything it records is logged too, and it is kept per handle,
    so another thread's or an older call's error would show through.)"""
    err = ffi.errno
    msg = last_message()
    if err == errno.ESRCH:  # no such domain
        raise DomainNotFound(function, err, msg or "no such domain")
    raise XenCtrlError(function, err or None, msg)


def check_xc(rc: int, function: str) -> int:
    """libxenctrl convention: negative is failure, errno tells why."""
    if rc < 0:
        raise_xc(function)
    return rc


def check_libxl(rc: int, function: str, handle: NativeHandle | None = None) -> int:
    """libxl convention: 0 is success, negative is an ERROR_* code.

    The exception carries what ``handle``'s logger collected since its
    ``clear_message()`` (without a handle: this thread's per-thread buffer).
    """
    if rc != 0:
        message = handle.message() if handle is not None else last_message()
        err = None  # libxl reports through its codes and log, not errno
        # As libxl.h spells them: ERROR_FAIL, ERROR_INVAL, ...
        known = lib.libxl_error_to_string(rc) if rc < 0 else ffi.NULL
        name = f"ERROR_{string(known).upper()}" if known != ffi.NULL else f"libxl error {rc}"
        if rc == lib.ERROR_DOMAIN_NOTFOUND:
            raise DomainNotFound(function, err, message or "no such domain")
        raise LibxlError(function, rc, name, err, message)
    return rc


def check_xs(ok: bool, function: str, path: str | None = None) -> None:
    """libxenstore convention: false (or NULL) is failure, errno tells why."""
    if not ok:
        err = ffi.errno or None
        raise XenstoreError(function, err, f"{path}: {os.strerror(err)}" if path and err
                            else (os.strerror(err) if err else "failed"))


#: Every handle and pool not yet collected (``track_for_fork``).
_inherited: weakref.WeakSet[Any] = weakref.WeakSet()
#: What a handle says in a child of os.fork() when asked to work.
FORKED = "was opened before os.fork(): the child must open its own (a new pyxen.Host)"


def track_for_fork(obj: Any) -> None:
    """Have ``obj._forked()`` called in every child os.fork() makes."""
    _inherited.add(obj)


def _after_fork_in_child() -> None:
    """In a child of os.fork(): the handles opened before are the parent's.
    They share its Xenstore connection, its descriptors and its libraries'
    locks (which another thread may have held at the fork), and freeing one
    here could undo the parent's state (libxl_ctx_free() unwatches on the
    shared connection, xs_close() joins a reader thread that is not here).
    So each is closed without being freed, and says so when used; the
    shim's count of reaper threads, the parent's, is cleared, and its
    libxenctrl gate, which the parent's threads may have held, made new.  (libxl's
    libxl_postfork_child_noexec() is not called: it takes a lock another
    thread may have held at the fork.  A child that opens libxl again keeps
    the parent's libxl descriptors open.)"""
    lib.pyxen_childproc_forget_reapers()
    lib.pyxen_xc_gate_reset()
    for obj in list(_inherited):
        obj._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class NativeHandle:
    """A C library handle opened with the shim's logger (which the library
    keeps a pointer to, so it lives exactly as long as the handle).
    Subclasses open in ``_open`` and close in ``_close``; ``close`` is
    idempotent, and the handle is a context manager.

    ``_per_handle_log``: the logger keeps one buffer for the handle, fed by
    any thread (a libxl context: libxl also logs from the threads that reap
    its children), rather than one per thread (a handle that threads share,
    whose calls each read their own thread's messages).  A handle with a
    per-handle log must serve one call at a time."""

    _what = "handle"
    _per_handle_log = False

    def __init__(self) -> None:
        self._h: Any = None
        self._in_forked_child = False
        self._logger = lib.pyxen_logger_new(
            lib.PYXEN_LOG_PER_HANDLE if self._per_handle_log else lib.PYXEN_LOG_PER_THREAD)
        if self._logger == ffi.NULL:
            raise MemoryError("pyxen_logger_new")
        try:
            self.clear_message()
            self._h = self._open(self._logger)
        except BaseException:
            lib.pyxen_logger_free(self._logger)
            self._logger = ffi.NULL
            raise
        track_for_fork(self)

    def _forked(self) -> None:
        """See _after_fork_in_child(): the parent's, dropped unfreed."""
        if self._h is not None:
            self._h = None
            self._logger = ffi.NULL
            self._in_forked_child = True

    def clear_message(self) -> None:
        """Forget what the logger collected (per-thread: on this thread);
        call before each library call."""
        if self._logger != ffi.NULL:
            lib.pyxen_logger_clear(self._logger)

    def message(self) -> str:
        """The error-level messages logged since ``clear_message()``, oldest
        (usually the root cause) first; per-thread: this thread's."""
        if self._logger == ffi.NULL:
            return ""
        buf = ffi.new("char[]", lib.PYXEN_MSG_LEN)
        n = lib.pyxen_logger_message(self._logger, buf, lib.PYXEN_MSG_LEN)
        return bytes(ffi.buffer(buf, n)).decode(errors="replace")

    def _open(self, logger: Any) -> Any:
        raise NotImplementedError

    def _close(self, handle: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._h is not None:
            self._close(self._h)
            self._h = None
            lib.pyxen_logger_free(self._logger)
            self._logger = ffi.NULL

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def handle(self) -> Any:
        if self._h is None:
            raise ValueError(f"{self._what} {FORKED}" if self._in_forked_child
                             else f"{self._what} is closed")
        return self._h
