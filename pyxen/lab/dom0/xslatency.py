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
connections are real).  Then, unless ``syscall_reads`` is 0, once per
count: xenstored's system calls per read over that many reads, with
``strace -c`` attached to it (a count that does not depend on the VM's
speed; the strace pass is not timed).  Writes ``$PYXEN_OUT/result.json``.

The connections are sockets of dom0 processes (here one process holds them
all, which costs xenstored the same per connection).  Idle guests' ring
connections are not measured here: a tiny guest per connection would take
the VM's memory and minutes of creates under TCG.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyxen.errors import XenError
from pyxen.lab.contract.requests import XsLatencyRequest, parse_request
from pyxen.lab.contract.strace import syscall_counts
from pyxen.lab.dom0.proccpu import find_pids, open_fds, process_cpu_s
from pyxen.lab.dom0.result import hand_back
from pyxen.lab.dom0.straced import straced
from pyxen.lab.dom0.xstrace import xs_trace_off
from pyxen.xenstore import XenStore

#: Untimed reads before each point's timed ones.
WARMUP_READS = 20


#: Seconds xenstored gets to drop the connections the pool closed.
CLOSE_SETTLE_S = 30.0


class IdlePool:
    """Idle libxenstore connections, grown and shrunk to a count.  With
    ``pid`` (xenstored's), ``resize`` returns only once xenstored holds what
    it should: it has answered a request on every new connection, and
    dropped every closed one (it sees the close only when its main loop
    gets to it, which on a loaded dom0 can be after the next point's reads
    have started)."""

    def __init__(self, pid: int | None = None) -> None:
        self.handles: list[XenStore] = []
        self.pid = pid

    def resize(self, n: int) -> None:
        closing = max(0, len(self.handles) - n)
        before = open_fds(self.pid) if self.pid is not None and closing else None
        while len(self.handles) > n:
            self.handles.pop().close()
        while len(self.handles) < n:
            xs = XenStore()
            self.handles.append(xs)
            # A request, so that xenstored has accepted the connection.
            xs.get_domain_path(0)
        if before is not None and self.pid is not None:
            deadline = time.monotonic() + CLOSE_SETTLE_S
            while (held := open_fds(self.pid)) > before - closing:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"xenstored still holds {held - (before - closing)} of the "
                        f"{closing} connections closed {CLOSE_SETTLE_S:g} s ago")
                time.sleep(0.01)

    def close(self) -> None:
        """Close every connection, without waiting for xenstored."""
        while self.handles:
            self.handles.pop().close()


def time_reads(xs: XenStore, path: str, reads: int, pid: int) -> dict[str, Any]:
    """Time ``reads`` reads of ``path``: the point's figures."""
    expected = xs.read(path)
    for _ in range(WARMUP_READS):
        xs.read(path)
    times_ns = []
    wrong = 0
    cpu0 = process_cpu_s(pid)
    for _ in range(reads):
        t0 = time.perf_counter_ns()
        value = xs.read(path)
        times_ns.append(time.perf_counter_ns() - t0)
        wrong += value != expected
    cpu1 = process_cpu_s(pid)
    us = sorted(t / 1000 for t in times_ns)
    return {
        "us_median": round(statistics.median(us), 2),
        "us_mean": round(statistics.fmean(us), 2),
        "us_p90": round(us[int(0.9 * (len(us) - 1))], 2),
        "xenstored_cpu_us_per_read": round((cpu1 - cpu0) * 1e6 / reads, 2),
        "wrong_values": wrong,
    }


def count_syscalls(xs: XenStore, path: str, reads: int, pid: int) -> dict[str, Any]:
    """xenstored's system calls per read of ``path`` over ``reads`` reads."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        with straced(pid, ["-c"], Path(out.name), "xenstored"):
            for _ in range(reads):
                xs.read(path)
        counts = syscall_counts(Path(out.name).read_text())
    return {"reads": reads,
            "per_read": {k: round(v / reads, 3) for k, v in sorted(counts.items())},
            "total_per_read": round(sum(counts.values()) / reads, 3)}


def run(req: XsLatencyRequest) -> dict[str, Any]:
    pids = find_pids(("xenstored",))
    if "xenstored" not in pids:
        raise RuntimeError("no xenstored process in dom0 (is it oxenstored?)")
    pid = pids["xenstored"]
    points: list[dict[str, Any]] = []
    syscalls: list[dict[str, Any]] = []
    errors: list[str] = []
    pool = IdlePool(pid)
    try:
        with xs_trace_off(), XenStore() as client:
            for rnd in range(req.rounds):
                order = sorted(req.idle, reverse=rnd % 2 == 1)
                for n in order:
                    pool.resize(n)
                    point = {"round": rnd, "idle": n, "xenstored_fds": open_fds(pid),
                             **time_reads(client, req.path, req.reads, pid)}
                    if point["wrong_values"]:
                        errors.append(f"round {rnd}, {n} idle: {point['wrong_values']} "
                                      f"reads of {req.path} returned another value")
                    points.append(point)
            for n in (sorted(req.idle) if req.syscall_reads else []):
                pool.resize(n)
                syscalls.append({"idle": n, **count_syscalls(client, req.path,
                                                             req.syscall_reads, pid)})
    except (XenError, OSError, RuntimeError, ValueError,
            subprocess.TimeoutExpired) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        pool.close()
    return {"xenstored_pid": pid, "reads": req.reads, "rounds": req.rounds,
            "path": req.path, "points": points, "syscalls": syscalls, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    return hand_back(run(parse_request(XsLatencyRequest, argv,
                                       prog="pyxen.lab.dom0.xslatency")))


if __name__ == "__main__":
    sys.exit(main())
