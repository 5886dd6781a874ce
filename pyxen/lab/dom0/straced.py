"""strace attached to a running dom0 daemon: to count its system calls, or to
hold one of them back while a test arranges a race."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: How long strace may take to attach to, and to detach from, a daemon.
STRACE_WAIT_S = 30.0


def _status_field(pid: int, name: str) -> str:
    """The first word of field ``name`` in /proc/<pid>/status ("" if none)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split()[1]
    return ""


def traced_by(pid: int, tracer: int, all_threads: bool = False) -> bool:
    """Whether ``tracer`` (this strace, not any other) traces ``pid``, and
    with ``all_threads`` every thread of it (what strace -f attaches to)."""
    tasks = ([int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
             if all_threads else [pid])
    return all(_status_field(t, "TracerPid") == str(tracer) for t in tasks)


def stopped_in_syscall(pid: int) -> int | None:
    """The number of the system call ``pid`` is stopped in by its tracer, or
    None when it is not stopped so (running, or blocked in the kernel)."""
    if _status_field(pid, "State") != "t":    # tracing stop
        return None
    # A number, "-1" (stopped outside a system call) or "running".
    first = Path(f"/proc/{pid}/syscall").read_text().split(maxsplit=1)[0]
    return int(first) if first.isdigit() else None


@contextmanager
def straced(pid: int, args: Sequence[str], out: Path, what: str) -> Iterator[None]:
    """strace ``args`` attached to ``pid`` (``what`` names it in errors),
    writing to ``out``; returns once this strace is the tracer of ``pid``
    (of every thread with -f; a tracer already there makes strace fail and
    this fail with its message), and detaches it
    (SIGINT: a system call it holds back then goes on) when the block ends."""
    proc = subprocess.Popen(["strace", *args, "-p", str(pid), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + STRACE_WAIT_S
        while not traced_by(pid, proc.pid, all_threads="-f" in args):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"strace did not attach to {what}: "
                                   + (proc.stderr.read() if proc.stderr else "")[:300])
            time.sleep(0.05)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STRACE_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
