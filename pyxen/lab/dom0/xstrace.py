"""Counting requests in xenstored's trace (``xenstored -T FILE``).

Each request xenstored receives is one line: ``IN <conn> <date> <time> <OP> (<args>)``
up to Xen 4.17; from 4.18 on, with a category prefix and the connection's
domain, ``io: IN <conn> (d<domid>) <date> <time> <OP> (<args>)``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError


def trace_path() -> Path:
    """xenstored's trace file in this dom0 ($PYXEN_XS_TRACE, else the lab's)."""
    return Path(os.environ.get(protocol.ENV_XS_TRACE, protocol.XS_TRACE))


def set_xs_trace(on: bool) -> None:
    """Switch xenstored's request trace on or off (``xenstore-control log``).

    The lab's xenstored always starts with its trace on.  In Xen 4.17 the
    trace is not free: xenstored writes each request's payload a byte per
    write(2), and a line per running domain on every pass of its main loop;
    what times Xen rather than counts requests turns it off."""
    argv = ["xenstore-control", "log", "on" if on else "off"]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise LabError(f"{' '.join(argv)} failed: {detail}") from exc


@contextmanager
def xs_trace_off() -> Iterator[None]:
    """xenstored's trace off for the block, and on again however it ends."""
    set_xs_trace(False)
    try:
        yield
    finally:
        set_xs_trace(True)


class TraceReader:
    """Reads a growing trace file from a remembered offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def take(self, conn: str | None = None) -> Counter[str]:
        """Requests by operation since the last call (or construction); with
        ``conn``, only that connection's (see :func:`connection_of`)."""
        return count_requests(self.take_text(), conn)

    def take_text(self) -> str:
        """The whole lines appended since the last call (or construction)."""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        # Only whole lines; a partial last line is read next time.
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode(errors="replace")


def _line(kind: str) -> str:
    """The start of a trace line of ``kind`` (a pattern), up to its message
    type: the connection (the first group), the domain from 4.18 on, the
    date and time."""
    return rf"(?:io: )?{kind} (\S+) (?:\(d\d+\) )?\d{{8}} \d\d:\d\d:\d\d "


#: A request's line: its connection, operation and arguments.
_REQUEST = re.compile(_line("IN") + r"(\S+) \((.*)\)$")


def _requests(text: str) -> Iterator[tuple[str, str, str]]:
    """Each request in trace text (either format), in order: its connection,
    operation and first argument (a path, for most requests)."""
    for m in map(_REQUEST.match, text.splitlines()):
        if m:
            yield m.group(1), m.group(2), m.group(3).split(" ", 1)[0]


def count_requests(text: str, conn: str | None = None) -> Counter[str]:
    """Requests by operation name in trace text (either format); with
    ``conn``, only those of that connection."""
    return Counter(op for c, op, _ in _requests(text) if conn is None or c == conn)


def request_args(text: str, op: str) -> list[str]:
    """The first argument (a path, for most requests) of each request
    ``op`` in trace text, in order, whoever sent it."""
    return [arg for _, o, arg in _requests(text) if o == op]


#: Requests a cache of reads in the client could answer when outside a
#: transaction and of an absolute path (libxenstore's cache: READ and
#: DIRECTORY), and one it answers always (a domain's path is a function of
#: its ID).
CACHEABLE_READS = ("READ", "DIRECTORY")
LOCAL_ANSWERS = ("GET_DOMAIN_PATH",)

#: How requests_by_reach() classes a request.
REACH_CLASSES = ("cacheable", "in_transaction", "other")


def requests_by_reach(text: str) -> list[dict[str, int]]:
    """Each connection's requests in trace text by what a cache of reads in
    that client could do with them, busiest connection first: ``cacheable``
    (READ or DIRECTORY of an absolute path sent while the connection had no
    transaction open, and GET_DOMAIN_PATH), ``in_transaction`` (any other
    request sent while it had one open, from a TRANSACTION_START to its
    TRANSACTION_END, the end included) and ``other`` (the rest: writes,
    watches, transaction starts, relative paths).

    The trace does not show a request's transaction, only the order of a
    connection's requests: on a connection that runs one transaction at a
    time, a read sent outside the transaction while it is open counts as in
    it, so ``cacheable`` is a lower bound of what such a cache could answer."""
    open_tx: dict[str, int] = {}
    by_conn: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        m = _REQUEST.match(line)
        if not m:
            continue
        conn, op, args = m.groups()
        counts = by_conn.setdefault(conn, dict.fromkeys(REACH_CLASSES, 0))
        depth = open_tx.get(conn, 0)
        if op == "TRANSACTION_START":
            open_tx[conn] = depth + 1
            reach = "other"
        elif op == "TRANSACTION_END":
            open_tx[conn] = max(0, depth - 1)
            reach = "in_transaction" if depth else "other"
        elif op in LOCAL_ANSWERS or (op in CACHEABLE_READS and not depth
                                      and args.startswith("/")):
            reach = "cacheable"
        else:
            reach = "in_transaction" if depth else "other"
        counts[reach] += 1
    return sorted(by_conn.values(), key=lambda c: -sum(c.values()))


#: A watch event xenstored wrote to a connection whole (OUT, or OUT(END)
#: for the last part of one written in parts): connection and arguments.
_EVENT = re.compile(_line(r"OUT(?:\(END\))?") + r"WATCH_EVENT \((.*)\)$")

#: The token prefix of libxenstore's cache's own watch (XS_CACHE_TOKEN in
#: the toolstack patch "tools/libs/store: add an opt-in cache of reads").
LIBXENSTORE_CACHE_TOKEN = "xs-cache:"


def count_watch_events(text: str) -> Counter[str]:
    """Watch events xenstored sent in trace text (Xen 4.18 and later trace
    them): ``"cache"`` those of libxenstore's cache's watches, ``"other"``
    the rest."""
    events: Counter[str] = Counter()
    for line in text.splitlines():
        m = _EVENT.match(line)
        if m:
            token = m.group(2).rstrip(" ").rsplit(" ", 1)[-1]
            events["cache" if token.startswith(LIBXENSTORE_CACHE_TOKEN) else "other"] += 1
    return events


def connection_of(text: str, op: str, arg: str) -> str:
    """The connection that sent request ``op`` whose first argument is
    ``arg`` in trace text: a client finds its own by sending a request no
    other would (a unique path).  LabError if there is none, or several."""
    conns = {c for c, o, a in _requests(text) if o == op and a == arg}
    if len(conns) != 1:
        raise LabError(f"xenstored's trace shows {len(conns)} connections sending {op} {arg}, "
                       "not one")
    return conns.pop()
