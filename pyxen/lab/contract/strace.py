"""A pure parser of ``strace -c``'s summary: system calls by name.  The
Xenstore latency benchmark's dom0 driver (pyxen.lab.dom0.xslatency) counts
xenstored's system calls per request with it: a count that does not depend
on the VM's speed."""

from __future__ import annotations

#: The summary's header columns, as strace prints them.
_HEADER = ("%", "time", "seconds", "usecs/call", "calls", "errors", "syscall")


def syscall_counts(summary: str) -> dict[str, int]:
    """Calls by system call name from ``strace -c`` output (the ``total``
    line left out).  ValueError if the text has no summary table."""
    lines = summary.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if tuple(line.split()) == _HEADER)
    except StopIteration:
        raise ValueError(f"no strace -c summary in {summary[:200]!r}") from None
    counts: dict[str, int] = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if not fields or set(line.strip()) <= {"-", " "}:
            continue
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) not in (5, 6) or not fields[3].isdigit():
            raise ValueError(f"unexpected strace -c line: {line!r}")
        if fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    return counts
