"""Taking Xen's own counters in a profiling build (``--profile``) in dom0:
``xenperf`` and ``xenlockprof`` are reset before a measured phase and read
after it, so the figures belong to that phase alone.  Their output is parsed
by pyxen.lab.contract.xenprof.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict
from typing import Any

from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.xenprof import parse_counters, parse_hypercalls, parse_lockprof


class XenprofError(LabError):
    """A counter tool failed where it must not (a reset)."""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _check(argv: list[str]) -> None:
    """Run ``argv``; XenprofError naming it and its stderr if it fails (a
    reset that did not happen would credit the phase with what came before)."""
    proc = _run(argv)
    if proc.returncode != 0:
        raise XenprofError(f"{' '.join(argv)} exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()}")


class Profiler:
    """Resets and reads the counters around a phase; inactive (``available``
    false) when the hypervisor was built without them."""

    def __init__(self) -> None:
        self.available = _run(["xenperf"]).returncode == 0 and \
            _run(["xenlockprof"]).returncode == 0

    def reset(self) -> None:
        if self.available:
            _check(["xenperf", "-r"])
            _check(["xenlockprof", "-r"])

    def read(self) -> dict[str, Any] | None:
        if not self.available:
            return None
        perf = _run(["xenperf", "-f"]).stdout
        locks = parse_lockprof(_run(["xenlockprof"]).stdout)
        return {"hypercalls": parse_hypercalls(perf),
                "counters": parse_counters(perf),
                "locks": {k: asdict(v) for k, v in locks.items()}}
