"""Typed exceptions for errors from Xen's C libraries.

Every failing call becomes one of these, carrying the function that failed,
the errno (when the library sets one) and the library's own message.
"""

from __future__ import annotations

import errno as errno_mod
import os


class XenError(Exception):
    """A Xen library call failed."""

    def __init__(self, function: str, errno: int | None, message: str) -> None:
        self.function = function
        self.errno = errno
        self.message = message
        name = errno_mod.errorcode.get(errno, str(errno)) if errno else None
        detail = message or (os.strerror(errno) if errno else "failed")
        super().__init__(f"{function}: {detail}" + (f" [{name}]" if name else ""))

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # Made again from its own arguments, so that it crosses processes
        # (multiprocessing, a ProcessPoolExecutor) as itself.
        return type(self), (self.function, self.errno, self.message)


class XenCtrlError(XenError):
    """libxenctrl (hypercalls) failed."""


class LibxlError(XenError):
    """libxenlight failed; ``code`` is its ERROR_* value, ``code_name`` its name."""

    def __init__(self, function: str, code: int, code_name: str, errno: int | None,
                 message: str) -> None:
        self.code = code
        self.code_name = code_name
        self._libxl_message = message
        super().__init__(function, errno,
                         f"{message} ({code_name})" if message else f"{code_name} ({code})")

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.function, self.code, self.code_name, self.errno,
                            self._libxl_message)


class XenstoreError(XenError):
    """libxenstore failed (errno names the Xenstore error, e.g. ENOENT, EACCES)."""


class DomainNotFound(XenError, LookupError):
    """No domain with that id or name."""


class TransactionConflict(XenstoreError):
    """A Xenstore transaction kept conflicting (EAGAIN) past its retries."""
