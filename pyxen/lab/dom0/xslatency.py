"""dom0 side of the Xenstore latency benchmark: what a read costs a client
while other clients hold idle connections to xenstored.  Run by the host as
``python -m pyxen.lab.dom0.xslatency --request JSON``, JSON a
pyxen.lab.contract.requests.XsLatencyRequest.

xenstored serves all its connections from one loop.  On a host that runs
many guests, most connections are idle (each running guest's ``xl`` monitor
holds one, as do xenconsoled and device models), so a loop that visits every
connection on every pass makes each request slower as guests accumulate.

For each round, and each count N of ``idle`` (ascending in even rounds,
descending in odd ones), N libxenstore connections are open, each having
made one request (so xenstored has accepted it); then ``reads`` reads of
``path`` are timed one by one through one more connection, with xenstored's
request trace off.  Recorded per point: the median, mean and 90th
percentile of a read in microseconds, xenstored's CPU time per read (its
utime+stime over the timed reads: the server's share, without the client's
Python), and xenstored's open file descriptors (which grow by N: the
connections are real).  With ``misses``, each point then times that many
reads of nodes not read before (made for them beforehand, removed after),
and with ``writes`` that many writes of the node's own value: the same
figures under ``miss`` and ``write``.  Then, unless ``syscall_reads`` is 0,
once per count: xenstored's system calls per read over that many reads
(and per miss and per write, when those are timed), with ``strace -c``
attached to it (a count that does not depend on the VM's speed; the strace
pass is not timed).  Writes ``$PYXEN_OUT/result.json``.

When dom0 runs the Xenstore caching proxy (``+cache`` variants), every
connection, timed or idle, goes through it, as every client's does: the
reads are then the proxy's hits, the misses and the writes pass through it
to xenstored.  Each point also gives the proxy's CPU time per request and
its hits and forwards over the timed requests (from its counters: a read
that was not a hit, or a miss or write that was not forwarded, is an error
of the run, in the strace pass too), and the strace pass counts the proxy's
system calls beside xenstored's: what a request costs dom0 with the proxy
in its path, in system calls, which a PV dom0 pays Xen for.

The connections are sockets of dom0 processes (here one process holds them
all, which costs xenstored the same per connection).  Idle guests' ring
connections are not measured here: a tiny guest per connection would take
the VM's memory and minutes of creates under TCG.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pyxen.errors import XenError
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError, describe
from pyxen.lab.contract.requests import XsLatencyRequest, parse_request
from pyxen.lab.contract.strace import syscall_counts
from pyxen.lab.dom0.proccpu import find_pids, open_fds, process_cpu_s
from pyxen.lab.dom0.proxystats import ProxyCounter
from pyxen.lab.dom0.result import hand_back
from pyxen.lab.dom0.straced import straced
from pyxen.lab.dom0.xstrace import xs_trace_off
from pyxen.xenstore import XenStore
from xenstore_cache.control import SetupError

#: Untimed requests before each point's timed ones.
WARMUP_READS = 20


#: Seconds xenstored gets to drop the connections the pool closed.
CLOSE_SETTLE_S = 30.0


class IdlePool:
    """Idle libxenstore connections, grown and shrunk to a count.  With
    ``pid`` (the server's the connections reach: xenstored's, or the
    proxy's in front of it), ``resize`` returns only once that server holds
    what it should: it has answered a request on every new connection, and
    dropped every closed one (it sees the close only when its main loop
    gets to it, which on a loaded dom0 can be after the next point's reads
    have started)."""

    def __init__(self, pid: int | None = None, server: str = "xenstored") -> None:
        self.handles: list[XenStore] = []
        self.pid = pid
        self.server = server

    def resize(self, n: int) -> None:
        closing = max(0, len(self.handles) - n)
        before = open_fds(self.pid) if self.pid is not None and closing else None
        while len(self.handles) > n:
            self.handles.pop().close()
        while len(self.handles) < n:
            xs = XenStore()
            self.handles.append(xs)
            # A request, so that the server has accepted the connection.
            xs.get_domain_path(0)
        if before is not None and self.pid is not None:
            deadline = time.monotonic() + CLOSE_SETTLE_S
            while (held := open_fds(self.pid)) > before - closing:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.server} still holds {held - (before - closing)} of the "
                        f"{closing} connections closed {CLOSE_SETTLE_S:g} s ago")
                time.sleep(0.01)

    def close(self) -> None:
        """Close every connection, without waiting for the server."""
        while self.handles:
            self.handles.pop().close()


@dataclass(frozen=True)
class Servers:
    """Where a client's request is served: xenstored, and the proxy in front
    of it when dom0 runs one (its counters and its process)."""

    xenstored: int
    proxy: ProxyCounter | None = None
    proxy_pid: int | None = None

    @classmethod
    def find(cls) -> Servers:
        pids = find_pids(("xenstored",))
        if "xenstored" not in pids:
            raise RuntimeError("no xenstored process in dom0 (is it oxenstored?)")
        proxy = ProxyCounter.from_env()
        return cls(pids["xenstored"], proxy, proxy.pid() if proxy else None)

    def cpu_s(self) -> tuple[float, float | None]:
        """CPU time of xenstored and of the proxy (None without one)."""
        return (process_cpu_s(self.xenstored),
                None if self.proxy_pid is None else process_cpu_s(self.proxy_pid))

    def proxy_counts(self) -> tuple[int, int] | None:
        """The proxy's hits and forwarded requests so far (None without one)."""
        if self.proxy is None:
            return None
        stats = self.proxy.stats()
        return int(stats["hits"]), int(stats["forwarded"])


#: What the driver times and counts.  "read": a read of the request's path
#: (through the proxy, a hit); "miss": a read of a node not read before
#: (through the proxy, forwarded); "write": a write of the path's own value
#: (forwarded).
Op = Literal["read", "miss", "write"]


def expected_proxy_counts(op: Op, n: int) -> tuple[int, int]:
    """The proxy's (hits, forwarded) over ``n`` requests ``op``."""
    return (n, 0) if op == "read" else (0, n)


def _request(xs: XenStore, op: Op, path: str, value: bytes) -> bool:
    """One request ``op`` on ``path``; whether a read returned ``value``
    (a write always answers True)."""
    if op in ("read", "miss"):
        return xs.read(path) == value
    if op == "write":
        xs.write(path, value)
        return True
    raise ValueError(f"unknown request {op!r}")


@contextlib.contextmanager
def targets(xs: XenStore, op: Op, path: str, n: int) -> Iterator[list[tuple[str, bytes]]]:
    """The node and value of each of ``n`` requests ``op``: ``path`` and its
    value for reads and writes; for misses, ``n`` nodes made under
    XS_MISS_DIR for them (as many requests as the timed ones, untimed)
    and removed afterwards, whatever happens."""
    if op != "miss":
        value = xs.read(path)
        yield [(path, value)] * n
        return
    nodes = [(f"{protocol.XS_MISS_DIR}/{i}", b"%d" % i) for i in range(n)]
    try:
        for node, value in nodes:
            xs.write(node, value)
        yield nodes
    finally:
        xs.rm(protocol.XS_MISS_DIR)


def time_requests(xs: XenStore, op: Op, path: str, n: int,
                  servers: Servers) -> dict[str, Any]:
    """Time ``n`` requests ``op`` after WARMUP_READS untimed ones: a point's
    figures.  The keys say ``per_read`` for every kind of request (their
    first use); under "miss" and "write" they are per miss and per write."""
    with targets(xs, op, path, WARMUP_READS + n) as nodes:
        for node, value in nodes[:WARMUP_READS]:
            _request(xs, op, node, value)
        times_ns = []
        wrong = 0
        counts0 = servers.proxy_counts()
        cpu0 = servers.cpu_s()
        for node, value in nodes[WARMUP_READS:]:
            t0 = time.perf_counter_ns()
            ok = _request(xs, op, node, value)
            times_ns.append(time.perf_counter_ns() - t0)
            wrong += not ok
        cpu1 = servers.cpu_s()
        counts1 = servers.proxy_counts()
    us = sorted(t / 1000 for t in times_ns)
    out: dict[str, Any] = {
        "us_median": round(statistics.median(us), 2),
        "us_mean": round(statistics.fmean(us), 2),
        "us_p90": round(us[int(0.9 * (len(us) - 1))], 2),
        "xenstored_cpu_us_per_read": round((cpu1[0] - cpu0[0]) * 1e6 / n, 2),
        "wrong_values": wrong,
    }
    if cpu0[1] is not None and cpu1[1] is not None and counts0 and counts1:
        out.update({"proxy_cpu_us_per_read": round((cpu1[1] - cpu0[1]) * 1e6 / n, 2),
                    **_proxy_delta(counts0, counts1)})
    return out


def _proxy_delta(before: tuple[int, int], after: tuple[int, int]) -> dict[str, int]:
    """The proxy's hits and forwards between two readings of its counters."""
    return {"proxy_hits": after[0] - before[0], "proxy_forwarded": after[1] - before[1]}


def _per_request(text: str, n: int) -> dict[str, Any]:
    # An attached strace (straced() waits until this one is the tracer)
    # writes no summary for a process that made no system call: xenstored
    # while the proxy answers every read.
    counts = syscall_counts(text) if text.strip() else {}
    return {"per_read": {k: round(v / n, 3) for k, v in sorted(counts.items())},
            "total_per_read": round(sum(counts.values()) / n, 3)}


def count_syscalls(xs: XenStore, op: Op, path: str, n: int,
                   servers: Servers) -> dict[str, Any]:
    """xenstored's system calls per request ``op`` over ``n`` of them, and
    the proxy's (every thread's) under ``proxy`` when dom0 runs one (else
    None), with its hits and forwards over them (asked outside the traced
    window).  Keys say ``per_read`` as in time_requests."""
    with targets(xs, op, path, n) as nodes, tempfile.TemporaryDirectory() as tmp:
        xs_out, proxy_out = Path(tmp) / "xenstored", Path(tmp) / "proxy"
        counts0 = servers.proxy_counts()
        with contextlib.ExitStack() as tracers:  # strace writes its summary as it detaches
            tracers.enter_context(straced(servers.xenstored, ["-c"], xs_out, "xenstored"))
            if servers.proxy_pid is not None:
                tracers.enter_context(straced(servers.proxy_pid, ["-c", "-f"], proxy_out,
                                              "xenstore-cache"))
            for node, value in nodes:
                _request(xs, op, node, value)
        counts1 = servers.proxy_counts()
        out: dict[str, Any] = {"reads": n, **_per_request(xs_out.read_text(), n),
                               "proxy": None}
        if servers.proxy_pid is not None and counts0 and counts1:
            out["proxy"] = _per_request(proxy_out.read_text(), n)
            out.update(_proxy_delta(counts0, counts1))
    return out


def proxy_mismatch(figures: dict[str, Any], op: Op, n: int, where: str) -> str | None:
    """Through the proxy, what ``n`` requests ``op`` measured must be what
    they say: every read answered from the cache, every miss and write
    forwarded.  None when they were (or no proxy counted them)."""
    if "proxy_hits" not in figures:
        return None
    got = (figures["proxy_hits"], figures["proxy_forwarded"])
    if got == expected_proxy_counts(op, n):
        return None
    return (f"{where}: of {n} {op}{'es' if op == 'miss' else 's'} the proxy answered "
            f"{got[0]} from its cache and forwarded {got[1]}")


def _kinds(req: XsLatencyRequest) -> list[tuple[Op, int]]:
    """The requests a point times, in protocol.XS_REQUESTS' order, and how
    many of each."""
    kinds: list[tuple[Op, int]] = [("read", req.reads), ("miss", req.misses),
                                   ("write", req.writes)]
    return [(op, n) for op, n in kinds if n]


def _place(record: dict[str, Any], op: Op, figures: dict[str, Any]) -> None:
    """A read's figures are the record's own, another request's go under its
    name (the layout pyxen.lab.host.xsbench reads)."""
    if op == "read":
        record.update(figures)
    else:
        record[op] = figures


def run(req: XsLatencyRequest) -> dict[str, Any]:
    servers: Servers | None = None
    points: list[dict[str, Any]] = []
    syscalls: list[dict[str, Any]] = []
    errors: list[str] = []
    pool: IdlePool | None = None
    try:
        servers = Servers.find()
        pid = servers.xenstored
        # Through the proxy, the idle connections are the proxy's clients:
        # xenstored never sees them, the proxy has to drop them.
        pool = (IdlePool(pid) if servers.proxy_pid is None
                else IdlePool(servers.proxy_pid, "xenstore-cache"))
        with xs_trace_off(), XenStore() as client:
            for rnd in range(req.rounds):
                order = sorted(req.idle, reverse=rnd % 2 == 1)
                for n in order:
                    pool.resize(n)
                    where = f"round {rnd}, {n} idle"
                    point: dict[str, Any] = {
                        "round": rnd, "idle": n, "xenstored_fds": open_fds(pid),
                        "proxy_fds": (None if servers.proxy_pid is None
                                      else open_fds(servers.proxy_pid))}
                    for op, count in _kinds(req):
                        figures = time_requests(client, op, req.path, count, servers)
                        _place(point, op, figures)
                        if (e := proxy_mismatch(figures, op, count, where)) is not None:
                            errors.append(e)
                        if figures["wrong_values"]:
                            what = (f"reads of {req.path}" if op == "read"
                                    else f"{op}es" if op == "miss" else f"{op}s")
                            errors.append(f"{where}: {figures['wrong_values']} "
                                          f"{what} returned another value")
                    points.append(point)
            for n in (sorted(req.idle) if req.syscall_reads else []):
                pool.resize(n)
                calls: dict[str, Any] = {"idle": n}
                for op, _ in _kinds(req):
                    figures = count_syscalls(client, op, req.path, req.syscall_reads,
                                             servers)
                    _place(calls, op, figures)
                    e = proxy_mismatch(figures, op, req.syscall_reads,
                                       f"system calls, {n} idle")
                    if e is not None:
                        errors.append(e)
                syscalls.append(calls)
    except (XenError, LabError, OSError, RuntimeError, ValueError, KeyError, SetupError,
            subprocess.TimeoutExpired) as exc:
        errors.append(f"{describe(exc)}")
    finally:
        if pool is not None:
            pool.close()
    return {"xenstored_pid": servers.xenstored if servers else None,
            "proxy_pid": servers.proxy_pid if servers else None, "reads": req.reads,
            "misses": req.misses, "writes": req.writes, "rounds": req.rounds,
            "path": req.path, "points": points, "syscalls": syscalls, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    return hand_back(run(parse_request(XsLatencyRequest, argv,
                                       prog="pyxen.lab.dom0.xslatency")))


if __name__ == "__main__":
    sys.exit(main())
