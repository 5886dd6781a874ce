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

    def take(self) -> Counter[str]:
        """Requests by operation since the last call (or construction)."""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        # Only whole lines; a partial last line is read next time.
        end = data.rfind(b"\n") + 1
        self.offset += end
        return count_requests(data[:end].decode(errors="replace"))


_REQUEST = re.compile(r"(?:io: )?IN \S+ (?:\(d\d+\) )?\d{8} \d\d:\d\d:\d\d (\S+) \(")


def count_requests(text: str) -> Counter[str]:
    """Requests by operation name in trace text (either format)."""
    ops: Counter[str] = Counter()
    for line in text.splitlines():
        m = _REQUEST.match(line)
        if m:
            ops[m.group(1)] += 1
    return ops
