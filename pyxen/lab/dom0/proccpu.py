"""CPU time of dom0's toolstack processes, to attribute a create's cost.

At concurrency 1 the benchmark reads, around each create, the CPU time
(user + system, from /proc/<pid>/stat) of xenstored, xenconsoled and the
benchmark's own process (libxl runs in it, or in the xl children it waits
for), and dom0's total from /proc/stat.  How each grows with the number of
running domains says where a per-create cost that grows with N is spent;
what the wall time has beyond dom0's total is time dom0 did not run
(the hypervisor, or other domains).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Daemons whose CPU time is attributed per create (by /proc/<pid>/comm).
DAEMONS = ("xenstored", "xenconsoled")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def parse_stat_cpu_s(stat: str, children: bool = False) -> float:
    """utime + stime (and, with ``children``, the waited-for children's
    cutime + cstime) in seconds, from the text of /proc/<pid>/stat."""
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are 14-17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks * _TICK_S


def parse_proc_stat_busy_s(text: str) -> float:
    """Busy CPU time of all CPUs (everything but idle and iowait), seconds,
    from the text of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + (v[4] if len(v) > 4 else 0)
            return (sum(v[:8]) - idle) * _TICK_S
    raise ValueError("no 'cpu' line in /proc/stat")


def find_pids(names: tuple[str, ...], proc: Path = Path("/proc")) -> dict[str, int]:
    """The first pid running each of ``names`` (by comm); absent ones left out."""
    found: dict[str, int] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
        except OSError:  # went away
            continue
        if comm in names and comm not in found:
            found[comm] = int(d.name)
    return found


def open_fds(pid: int) -> int:
    """How many files process ``pid`` has open (for xenstored: its
    connections, its listening sockets and a few files); OSError if gone."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def process_cpu_s(pid: int) -> float:
    """Process ``pid``'s CPU time (utime + stime), seconds; OSError if gone."""
    return parse_stat_cpu_s(Path(f"/proc/{pid}/stat").read_text())


class CpuSampler:
    """Reads the CPU time of the daemons, of this process and of dom0."""

    def __init__(self) -> None:
        self.pids = find_pids(DAEMONS)

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            try:
                out[name] = process_cpu_s(pid)
            except OSError:  # restarted or gone: no figure rather than a wrong one
                continue
        out["bench"] = parse_stat_cpu_s(Path("/proc/self/stat").read_text(), children=True)
        out["dom0"] = parse_proc_stat_busy_s(Path("/proc/stat").read_text())
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: round(after[k] - before[k], 4) for k in before if k in after}
