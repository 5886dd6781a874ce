"""How the host backs the nested machine's RAM: how much of QEMU's
resident memory is in transparent huge pages.

Under TCG every guest memory access goes through QEMU's software TLB to
host memory; host huge pages make the misses cheaper.  Whether QEMU got
them depends on how fragmented the host's free memory was when the guest
first touched its RAM, so two boots of the same build can run the same
work at different speeds.  Benchmarks record it per boot, so that a slow
boot can be told from a slow build."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

#: Below this fraction of resident memory in huge pages a boot is called
#: out in the log (a boot that got them had over 99% here).
HUGE_FRACTION_WARN = 0.9
_FIELDS = {"Rss": "rss_mib", "AnonHugePages": "huge_mib"}


def parse_smaps_rollup(text: str) -> dict[str, float]:
    """``rss_mib``, ``huge_mib`` and ``huge_fraction`` from the text of
    /proc/PID/smaps_rollup; ValueError if a field is missing or not in kB."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in _FIELDS:
            value, _, unit = rest.strip().partition(" ")
            if unit.strip() != "kB" or not value.isdigit():
                raise ValueError(f"smaps_rollup: {line.strip()!r} is not a size in kB")
            found[_FIELDS[key]] = int(value)
    missing = sorted(k for k, v in _FIELDS.items() if v not in found)
    if missing:
        raise ValueError(f"smaps_rollup: no {', '.join(missing)} line")
    rss, huge = found["rss_mib"], found["huge_mib"]
    return {"rss_mib": round(rss / 1024, 1), "huge_mib": round(huge / 1024, 1),
            "huge_fraction": round(huge / rss, 4) if rss else 0.0}


def read_backing(pid: int, guest_mib: int | None = None,
                 proc: Path = Path("/proc")) -> dict[str, float] | None:
    """The backing of process ``pid``'s memory now, None if it cannot be
    read (the process is gone, the kernel has no smaps_rollup, or it reads
    as something else).  A boot whose huge pages cover less than 90% of
    its guest RAM (``guest_mib``) or of QEMU's resident memory, whichever
    is smaller (QEMU's own memory counts in the one, RAM the guest never
    touched is missing from the other), is logged as a warning."""
    try:
        backing = parse_smaps_rollup((proc / str(pid) / "smaps_rollup").read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot tell how QEMU %d's memory is backed: %s", pid, exc)
        return None
    base = backing["rss_mib"] if guest_mib is None else min(backing["rss_mib"], guest_mib)
    if backing["huge_mib"] < HUGE_FRACTION_WARN * base:
        log.warning("QEMU's RAM is %.0f%% in huge pages (%.0f of %.0f MiB): this boot's "
                    "TCG runs slower than one that got them; compare its timings with care",
                    100 * backing["huge_mib"] / base if base else 0.0, backing["huge_mib"],
                    base)
    return backing
