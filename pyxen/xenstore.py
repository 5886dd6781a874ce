"""libxenstore: read, write, directory, rm, permissions, transactions, watches.

Values are bytes (Xenstore values may hold any byte and may be empty); a str
given to ``write`` is encoded as UTF-8.  Errors are XenstoreError with the
errno Xenstore answered (ENOENT, EACCES, EINVAL, ...).
"""

from __future__ import annotations

import errno
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from pyxen import limits
from pyxen._native import FORKED, check_xs, ffi, lib, string, track_for_fork
from pyxen.errors import TransactionConflict, XenstoreError

T = TypeVar("T")

# Xenstore's own limits (xen/include/public/io/xs_wire.h).  A write's payload
# is the path, a NUL and the value, so the longest value depends on the path.

#: ``XENSTORE_PAYLOAD_MAX``: the longest payload of one message.
MAX_PAYLOAD = 4096
#: ``XENSTORE_ABS_PATH_MAX``: the longest absolute path.
MAX_PATH = 3072
#: The longest watch token every event of the watch has room for.
MAX_TOKEN = MAX_PAYLOAD - MAX_PATH - 2
#: The kernel's device for the ring of the domain a program runs in:
#: libxenstore's way to xenstored when it has no socket there (or when
#: XENSTORED_PATH names the device).
XENBUS_DEVICE = "/dev/xen/xenbus"

_PERM_CHARS = {"n": 0, "r": 1, "w": 2, "b": 3}


@dataclass(frozen=True)
class Perm:
    """One entry of a node's permission list: ``domid`` and one of n r w b.

    The first entry of a list names the owner and, with its letter, what every
    domain not listed may do (as xenstore-chmod does)."""

    domid: int
    access: str

    def __post_init__(self) -> None:
        if self.access not in _PERM_CHARS:
            raise ValueError(f"permission must be one of n r w b, got {self.access!r}")
        if not isinstance(self.domid, int) or not 0 <= self.domid <= 0xFFFF:
            raise ValueError(f"permission domid must be 0..65535, got {self.domid!r}")

    def __str__(self) -> str:
        return f"{self.access}{self.domid}"


def _check_token(token: str) -> bytes:
    """A watch token: a string without NUL, short enough that an event for
    any path fits one message (path, NUL, token, NUL): xenstored drops an
    event that does not, without a word."""
    if not isinstance(token, str):
        raise ValueError(f"watch token must be a string, got {token!r}")
    if "\0" in token:
        raise ValueError("watch token must not contain NUL")
    raw = token.encode()
    if len(raw) > MAX_TOKEN:
        raise ValueError(f"watch token of {len(raw)} bytes is longer than {MAX_TOKEN} "
                         "(an event for a path of the longest length would be dropped)")
    return raw


def _check_path(path: str) -> bytes:
    if not isinstance(path, str) or not path:
        raise ValueError(f"Xenstore path must be a non-empty string, got {path!r}")
    if "\0" in path:
        raise ValueError("Xenstore path must not contain NUL")
    raw = path.encode()
    if len(raw) > MAX_PATH:
        raise ValueError(f"Xenstore path longer than {MAX_PATH} bytes")
    return raw


class _Ops:
    """The node operations, in a transaction or outside one."""

    _t: int

    @property
    def _h(self) -> Any:
        """The open libxenstore handle, or a ValueError saying why there is none."""
        raise NotImplementedError

    def read(self, path: str) -> bytes:
        n = ffi.new("unsigned int *")
        p = lib.xs_read(self._h, self._t, _check_path(path), n)
        check_xs(p != ffi.NULL, "xs_read", path)
        try:
            return bytes(ffi.buffer(p, n[0]))
        finally:
            lib.free(p)

    def write(self, path: str, value: bytes | str) -> None:
        if isinstance(value, str):
            data = value.encode()
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        else:  # bytes(5) would be five NULs
            raise TypeError(f"Xenstore value must be bytes or str, got {type(value).__name__}")
        raw = _check_path(path)
        if len(raw) + 1 + len(data) > MAX_PAYLOAD:
            raise ValueError(
                f"Xenstore write of {len(data)} bytes to {path!r} is longer than one message "
                f"allows (path + NUL + value <= {MAX_PAYLOAD}, so at most "
                f"{MAX_PAYLOAD - len(raw) - 1} bytes here)")
        check_xs(lib.xs_write(self._h, self._t, raw, data, len(data)), "xs_write", path)

    def mkdir(self, path: str) -> None:
        check_xs(lib.xs_mkdir(self._h, self._t, _check_path(path)), "xs_mkdir", path)

    def rm(self, path: str) -> None:
        check_xs(lib.xs_rm(self._h, self._t, _check_path(path)), "xs_rm", path)

    def directory(self, path: str) -> list[str]:
        n = ffi.new("unsigned int *")
        p = lib.xs_directory(self._h, self._t, _check_path(path), n)
        check_xs(p != ffi.NULL, "xs_directory", path)
        try:
            return [string(p[i]) for i in range(n[0])]
        finally:
            lib.free(p)

    def exists(self, path: str) -> bool:
        try:
            self.read(path)
        except XenstoreError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def get_perms(self, path: str) -> list[Perm]:
        n = ffi.new("unsigned int *")
        p = lib.xs_get_permissions(self._h, self._t, _check_path(path), n)
        check_xs(p != ffi.NULL, "xs_get_permissions", path)
        try:
            letters = {v: k for k, v in _PERM_CHARS.items()}
            return [Perm(int(p[i].id), letters[int(p[i].perms) & 3]) for i in range(n[0])]
        finally:
            lib.free(p)

    def set_perms(self, path: str, perms: list[Perm]) -> None:
        if not perms:
            raise ValueError("a permission list needs at least the owner entry")
        arr = ffi.new("struct xs_permissions[]", len(perms))
        for i, perm in enumerate(perms):
            arr[i].id = perm.domid
            arr[i].perms = _PERM_CHARS[perm.access]
        check_xs(lib.xs_set_permissions(self._h, self._t, _check_path(path), arr, len(perms)),
                 "xs_set_permissions", path)


class Transaction(_Ops):
    """Operations inside one Xenstore transaction (see XenStore.transaction);
    usable only until it ends."""

    def __init__(self, store: XenStore, tid: int) -> None:
        self._store = store
        self._t = tid
        self.ended = False

    @property
    def _h(self) -> Any:
        if self.ended:
            raise ValueError(f"Xenstore transaction {self._t} has ended")
        return self._store._h


def cache_supported() -> bool:
    """Whether this libxenstore has a cache of reads (XS_OPEN_CACHE)."""
    return bool(lib.PYXEN_XS_OPEN_CACHE)


class XenStore(_Ops):
    """A connection to xenstored (socket, or /dev/xen/xenbus).

    ``cache``: read through libxenstore's cache (XS_OPEN_CACHE): reads
    outside transactions are answered from memory when the library can, at
    least as fresh as the last message it read from xenstored, and fresh
    again after each watch event this handle delivers.  The library honours
    it on socket connections only (and not with LIBXENSTORE_CACHE=0)."""

    def __init__(self, cache: bool = False) -> None:
        if cache and not cache_supported():
            raise ValueError("cache needs a libxenstore with XS_OPEN_CACHE; this one has none")
        h = lib.xs_open(int(lib.PYXEN_XS_OPEN_CACHE) if cache else 0)
        check_xs(h != ffi.NULL, "xs_open")
        self._handle: Any = h
        self._t = lib.XBT_NULL
        self._in_forked_child = False
        track_for_fork(self)

    def _forked(self) -> None:
        """In a child of os.fork(): the parent's connection, dropped unclosed
        (see pyxen._native._after_fork_in_child())."""
        if self._handle is not None:
            self._handle = None
            self._in_forked_child = True

    @property
    def _h(self) -> Any:
        if self._handle is None:
            raise ValueError(f"XenStore connection {FORKED}" if self._in_forked_child
                             else "XenStore connection is closed")
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            lib.xs_close(self._handle)
            self._handle = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def get_domain_path(self, domid: int) -> str:
        # Any 32-bit ID: xenstored names the path of IDs no domain has too.
        limits.unsigned(domid, 32, "domid")
        p = lib.xs_get_domain_path(self._h, domid)
        check_xs(p != ffi.NULL, "xs_get_domain_path")
        try:
            return string(p)
        finally:
            lib.free(p)

    def introduce_domain(self, domid: int, mfn: int, port: int) -> None:
        """XS_INTRODUCE: tell xenstored of domain ``domid``'s ring (machine
        frame ``mfn``) and event channel ``port`` (privileged).  For a domain
        xenstored already knows, it rebinds the event channel and resets the
        ring and the connection's pending requests, watches and transactions."""
        args = (limits.domid(domid), limits.mfn(mfn), limits.evtchn_port(port))
        check_xs(lib.xs_introduce_domain(self._h, *args), "xs_introduce_domain",
                 f"domain {domid}")

    # -- transactions ---------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One attempt: commits on normal exit, aborts on an exception.  A
        conflict raises XenstoreError(EAGAIN); ``run_transaction`` retries."""
        h = self._h
        tid = lib.xs_transaction_start(h)
        check_xs(tid != 0, "xs_transaction_start")
        tx = Transaction(self, tid)
        try:
            yield tx
        except BaseException:
            tx.ended = True
            if self._handle is h:  # closed meanwhile: xenstored dropped it
                lib.xs_transaction_end(h, tid, True)
            raise
        tx.ended = True
        if self._handle is not h:
            raise ValueError(f"XenStore connection closed inside transaction {tid}: "
                             "nothing was committed")
        check_xs(lib.xs_transaction_end(h, tid, False), "xs_transaction_end")

    def run_transaction(self, body: Callable[[Transaction], T], retries: int = 16,
                        backoff_s: float = 0.001) -> T:
        """Run ``body`` in a transaction, again from the start while Xenstore
        reports a conflict (EAGAIN), at most ``retries`` times."""
        for attempt in range(retries + 1):
            try:
                with self.transaction() as tx:
                    result = body(tx)
                return result
            except XenstoreError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
                time.sleep(backoff_s * (2 ** min(attempt, 8)))
        raise TransactionConflict("xs_transaction_end", errno.EAGAIN,
                                  f"still conflicting after {retries} retries")

    # -- watches -----------------------------------------------------------
    def watch(self, path: str, token: str) -> None:
        """Watch ``path`` (and below); events carry ``token``.  Xenstore fires
        each watch once on registration, and may fire spuriously."""
        check_xs(lib.xs_watch(self._h, _check_path(path), _check_token(token)), "xs_watch",
                 path)

    def unwatch(self, path: str, token: str) -> None:
        check_xs(lib.xs_unwatch(self._h, _check_path(path), _check_token(token)),
                 "xs_unwatch", path)

    def read_watch(self, timeout: float | None = None) -> tuple[str, str] | None:
        """The next watch event (path, token), or None after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = lib.xs_fileno(self._h)
        check_xs(fd >= 0, "xs_fileno")
        while True:
            ev = lib.xs_check_watch(self._h)
            if ev != ffi.NULL:
                try:
                    return (string(ev[lib.XS_WATCH_PATH]), string(ev[lib.XS_WATCH_TOKEN]))
                finally:
                    lib.free(ev)
            if ffi.errno not in (0, errno.EAGAIN):
                check_xs(False, "xs_check_watch")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                return None
            select.select([fd], [], [], left)
