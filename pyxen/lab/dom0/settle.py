"""Waiting for a quiet host before a benchmark starts: Xen scrubs freed
memory (and, after boot, free RAM, "bootscrub=idle") in its idle loop, and
a benchmark that starts meanwhile shares the pCPUs with it.  Benchmarks
wait for it before they load the host (spinners keep the idle loop from
ever scrubbing)."""

from __future__ import annotations

import time
from typing import Any

#: How long a benchmark waits for Xen's idle loop to finish scrubbing.
SCRUB_SETTLE_S = 300.0


def settle_scrub(timeout: float) -> dict[str, Any]:
    """Wait until Xen's heap dump shows no unscrubbed free page (or
    ``timeout`` s): how long that took, and what was left."""
    from pyxen.lab.contract.heapdump import unscrubbed_by_node
    from pyxen.xenctrl import XenCtrl
    t0 = time.monotonic()
    first: int | None = None
    with XenCtrl() as xc:
        while True:
            left = sum(unscrubbed_by_node(xc.heap_dump()).values())
            first = left if first is None else first
            waited = time.monotonic() - t0
            if left == 0 or waited > timeout:
                return {"unscrubbed_pages_at_start": first, "waited_s": round(waited, 1),
                        "unscrubbed_pages_left": left}
            time.sleep(1.0)
