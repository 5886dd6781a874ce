"""Reading Xen's own counters in a profiling build (``--profile``), the pure
part: parsing ``xenperf -f`` (software perf counters; the ``hypercalls`` array
counts every hypercall entry, continuations included) and ``xenlockprof``
(per-lock acquisitions, blocks and times), and the domctl retries derived from
a profile.  dom0 takes the profile (pyxen.lab.dom0.xenprof.Profiler); the host
reads figures from it (pyxen.lab.host.bench).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_LOCK_LINE = re.compile(
    r"^(?P<name>.+?)\s*: lock:\s*(?P<lock>\d+)\(\s*(?P<lock_s>[\d.]+)s\), "
    r"block:\s*(?P<block>\d+)\(\s*(?P<block_s>[\d.]+)s\)$")


@dataclass(frozen=True)
class LockStat:
    acquisitions: int
    held_s: float
    blocked: int        # acquisitions that had to wait (spun)
    blocked_s: float    # time spent waiting


def parse_lockprof(text: str) -> dict[str, LockStat]:
    """``xenlockprof`` output -> {"global lock heap_lock": LockStat, ...}."""
    out: dict[str, LockStat] = {}
    for line in text.splitlines():
        m = _LOCK_LINE.match(line.strip())
        if m:
            name = m.group("name").strip()
            prev = out.get(name)
            stat = LockStat(int(m.group("lock")), float(m.group("lock_s")),
                            int(m.group("block")), float(m.group("block_s")))
            if prev is not None:  # several locks of one name: add them up
                stat = LockStat(prev.acquisitions + stat.acquisitions,
                                prev.held_s + stat.held_s, prev.blocked + stat.blocked,
                                prev.blocked_s + stat.blocked_s)
            out[name] = stat
    return out


#: Hypercall numbers (xen/include/public/xen.h) whose counts are named.
HYPERCALL_NAMES = {1: "mmu_update", 12: "memory_op", 14: "update_va_mapping",
                   26: "mmuext_op", 29: "sched_op", 32: "event_channel_op",
                   35: "sysctl", 36: "domctl", 48: "arch_0", 49: "arch_1"}


def parse_hypercalls(text: str) -> dict[str, int]:
    """The ``hypercalls`` perf counter array of ``xenperf -f``: one row of
    counts indexed by hypercall number -> {name or "hc<N>": count} (non-zero)."""
    for line in text.splitlines():
        if line.startswith("hypercalls ") and "T=" in line:
            values = line.split("T=", 1)[1].split()[1:]   # [0] is the total
            return {HYPERCALL_NAMES.get(i, f"hc{i}"): int(v)
                    for i, v in enumerate(values) if v.isdigit() and int(v)}
    return {}


_COUNTER_LINE = re.compile(r"^(?P<name>\S.*?)\s+T=\s*(?P<total>\d+)")

#: Perf counters kept in a profile, by the start of their xenperf name: the
#: domctl lock outcomes counted by the hypervisor series' domctl counters
#: (absent from other builds) and the lab's, and the lab's count of pages
#: scrubbed in the background (SCRUB_BACKGROUND_COUNTER).
COUNTER_PREFIXES = ("domctl:", "scrub:")

#: The lab's perf counter of free pages cleaned by background scrubbing
#: (pyxen/lab/data/profile/background-scrub-counter.patch).
SCRUB_BACKGROUND_COUNTER = "scrub: pages scrubbed in the background"

#: Of those, the ones that count a domctl entered again because a lock was
#: busy: the lab's "domctl: retried, lock busy" (``domctl_lock_acquire()``
#: turned it away) and, with hypervisor patch 0014, "domctl: retried, kill
#: lock busy" (a destroydomain found another destruction holding the kill
#: lock; with 0015 it blocked until that one let go).
RETRY_COUNTER_PREFIX = "domctl: retried"


def parse_counters(text: str, prefixes: tuple[str, ...] = COUNTER_PREFIXES) -> dict[str, int]:
    """Totals (the ``T=`` column, summed over CPUs) of the ``xenperf -f``
    counters whose name starts with one of ``prefixes``."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _COUNTER_LINE.match(line)
        if m and m.group("name").startswith(prefixes):
            out[m.group("name")] = int(m.group("total"))
    return out


#: The domctl lock's name in ``xenlockprof`` (a spinlock, in stock and in
#: the hypervisor series alike).
DOMCTL_LOCK = "global lock domctl_lock"

#: The page allocator's lock in ``xenlockprof``.
HEAP_LOCK = "global lock heap_lock"

#: Global locks whose waits count as "global lock wait" per create.
GLOBAL_LOCKS = (DOMCTL_LOCK, HEAP_LOCK)


def domctl_retries(profile: dict[str, Any] | None) -> int | None:
    """Domctl hypercall entries that found a domctl lock busy and were
    continued, in a profile from ``Profiler.read()``: the sum of the
    ``domctl: retried`` perf counters, which the lab's profiling
    instrumentation (pyxen/lab/data/profile) adds to every variant, and
    the hypervisor series' own kill-lock counter.

    None when the build has no such counter: lock profiling records nothing
    for a failed trylock, and hypercall entries minus ``domctl_lock``
    acquisitions stopped approximating retries in Xen 4.18, where several
    domctls (getdomaininfo, getvcpuinfo, ...) run without that lock."""
    if not profile:
        return None
    retry = {k: v for k, v in (profile.get("counters") or {}).items()
             if k.startswith(RETRY_COUNTER_PREFIX)}
    if not retry:
        return None
    return sum(int(v) for v in retry.values())


def domctl_retries_per_op(profile: dict[str, Any] | None, ops: int) -> float | None:
    """``domctl_retries(profile)`` per operation (create or destroy); None
    when unknown or when there was no operation."""
    retries = domctl_retries(profile)
    return None if retries is None or not ops else retries / ops


def background_scrubbed(profile: dict[str, Any] | None) -> int | None:
    """Pages that background scrubbing (idle CPUs, and the scrub workers when
    they are switched on) cleaned during a profiled phase: the lab's
    SCRUB_BACKGROUND_COUNTER.  None when the build has no such counter
    (not a profiling build, or one from before the counter)."""
    if not profile:
        return None
    value = (profile.get("counters") or {}).get(SCRUB_BACKGROUND_COUNTER)
    return None if value is None else int(value)


#: The figures phase_figures() gives, in its order.
PHASE_FIGURES = ("heap_lock_wait_s", "heap_lock_held_s", "heap_lock_blocked", "domctl_entries",
                 "background_scrubbed")


def phase_figures(profile: dict[str, Any] | None) -> dict[str, float | int | None]:
    """What a profiled phase cost in Xen, as flat figures (all None without a
    profile): heap_lock's wait and hold (s) and contended acquisitions,
    domctl hypercall entries (continuations included) and pages scrubbed
    in the background meanwhile."""
    heap = (profile.get("locks") or {}).get(HEAP_LOCK) if profile else None
    return {
        "heap_lock_wait_s": None if heap is None else float(heap["blocked_s"]),
        "heap_lock_held_s": None if heap is None else float(heap["held_s"]),
        "heap_lock_blocked": None if heap is None else int(heap["blocked"]),
        "domctl_entries": (None if not profile
                           else int((profile.get("hypercalls") or {}).get("domctl", 0))),
        "background_scrubbed": background_scrubbed(profile),
    }
