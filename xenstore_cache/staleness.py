"""Measure how long the cache may serve a value after a write made elsewhere.

A writer connected straight to xenstored (as a guest writing through its ring
is) changes a node the proxy has cached; a reader polls that node through the
proxy until it sees the new value.  The time from the write's
acknowledgement to the first fresh read is the staleness window, bounded by
how fast xenstored's watch event reaches the proxy.

    python -m xenstore_cache.staleness --listen P --upstream P [--samples N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from xenstore_cache.client import WireClient
from xenstore_cache.control import DEFAULT_LISTEN, DEFAULT_UPSTREAM
from xenstore_cache.wire import Op

NODE = b"/tool/xenstore-cache/staleness"


async def measure(listen: Path, upstream: Path, samples: int,
                  timeout: float = 5.0) -> dict[str, object]:
    """Staleness windows in seconds, and how many reads returned the old value."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    reader = await WireClient.open(listen)
    writer = await WireClient.open(upstream)
    windows: list[float] = []
    stale_reads = 0
    try:
        for i in range(samples):
            old, new = f"v{2 * i}".encode(), f"v{2 * i + 1}".encode()
            await writer.call(Op.WRITE, NODE + b"\0" + old)
            # Read through the proxy until it answers the old value (cached).
            deadline = time.monotonic() + timeout
            while (await reader.call(Op.READ, NODE + b"\0")).payload != old:
                if time.monotonic() > deadline:
                    raise TimeoutError("the proxy never served the first value")
            await reader.call(Op.READ, NODE + b"\0")
            await writer.call(Op.WRITE, NODE + b"\0" + new)
            t0 = time.monotonic()
            while True:
                got = (await reader.call(Op.READ, NODE + b"\0")).payload
                if got == new:
                    break
                stale_reads += 1
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"still {got!r} {timeout} s after the write")
            windows.append(time.monotonic() - t0)
        await writer.call(Op.RM, NODE + b"\0")
    finally:
        reader.close()
        writer.close()
    windows.sort()
    return {
        "samples": samples,
        "stale_reads": stale_reads,
        "window_s_median": statistics.median(windows),
        "window_s_p99": windows[min(len(windows) - 1, int(0.99 * len(windows)))],
        "window_s_max": windows[-1],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xenstore_cache.staleness",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=Path, default=Path(DEFAULT_LISTEN))
    ap.add_argument("--upstream", type=Path, default=Path(DEFAULT_UPSTREAM))
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        res = asyncio.run(measure(args.listen, args.upstream, args.samples))
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"staleness: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:18} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
