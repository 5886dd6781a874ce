"""Loading pyxen._xen (the cffi module) and turning return codes into exceptions.

``PYXEN_NATIVE`` may name another build of the module (a file path): the lab
uses it in dom0 to load bindings compiled against the staged Xen's headers.
"""

from __future__ import annotations

import importlib.util
import os
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
    """The error-level messages the libraries logged on this thread since the
    last ``clear_message()``, oldest (usually the root cause) first."""
    return str(ffi.string(lib.pyxen_last_message()).decode(errors="replace"))


def clear_message() -> None:
    lib.pyxen_clear_message()


def string(ptr: Any) -> str:
    return str(ffi.string(ptr).decode(errors="replace"))


def raise_xc(function: str, xch: Any = None) -> NoReturn:
    err = ffi.errno
    msg = last_message()
    if not msg and xch is not None and xch != ffi.NULL:
        e = lib.xc_get_last_error(xch)
        if e != ffi.NULL and e.code:
            msg = string(e.message)
    if err == 3:  # ESRCH: no such domain
        raise DomainNotFound(function, err, msg or "no such domain")
    raise XenCtrlError(function, err or None, msg)


def check_xc(rc: int, function: str, xch: Any = None) -> int:
    """libxenctrl convention: negative is failure, errno tells why."""
    if rc < 0:
        raise_xc(function, xch)
    return rc


def check_libxl(rc: int, function: str) -> int:
    """libxl convention: 0 is success, negative is an ERROR_* code."""
    if rc != 0:
        err = None  # libxl reports through its codes and log, not errno
        # As libxl.h spells them: ERROR_FAIL, ERROR_INVAL, ...
        name = ("ERROR_" + string(lib.libxl_error_to_string(rc)).upper()) if rc < 0 \
            else str(rc)
        if rc == lib.ERROR_DOMAIN_NOTFOUND:
            raise DomainNotFound(function, err, last_message() or "no such domain")
        raise LibxlError(function, rc, name, err, last_message())
    return rc


def check_xs(ok: bool, function: str, path: str | None = None) -> None:
    """libxenstore convention: false (or NULL) is failure, errno tells why."""
    if not ok:
        err = ffi.errno or None
        raise XenstoreError(function, err, f"{path}: {os.strerror(err)}" if path and err
                            else (os.strerror(err) if err else "failed"))


class NativeHandle:
    """A C library handle opened with the shim's logger (which the library
    keeps a pointer to, so it lives exactly as long as the handle).
    Subclasses open in ``_open`` and close in ``_close``; ``close`` is
    idempotent, and the handle is a context manager."""

    _what = "handle"

    def __init__(self) -> None:
        self._h: Any = None
        self._logger = lib.pyxen_logger_new()
        if self._logger == ffi.NULL:
            raise MemoryError("pyxen_logger_new")
        try:
            clear_message()
            self._h = self._open(self._logger)
        except BaseException:
            lib.free(self._logger)  # the logger's destroy hook is free() too
            self._logger = ffi.NULL
            raise

    def _open(self, logger: Any) -> Any:
        raise NotImplementedError

    def _close(self, handle: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._h is not None:
            self._close(self._h)
            self._h = None
            lib.free(self._logger)
            self._logger = ffi.NULL

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def handle(self) -> Any:
        if self._h is None:
            raise ValueError(f"{self._what} is closed")
        return self._h
