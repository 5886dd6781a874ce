"""What other programs need of the proxy without running it: where its
sockets are, and the client of its control socket.

Only the standard library is imported (no server code, no pyxen), so the lab
can start the proxy and read its counters from code that must not pull in
the proxy itself.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

#: Where libxenstore clients connect by default (and the proxy listens).
DEFAULT_LISTEN = "/var/run/xenstored/socket"
#: Where xenstored is moved to (start it with XENSTORED_PATH set to this).
DEFAULT_UPSTREAM = "/var/run/xenstored/upstream-socket"
#: The proxy's control socket (``xenstore-cache stats``).
DEFAULT_CONTROL = "/var/run/xenstored/cache-control"
#: The longest line either side of the control socket reads (asyncio's
#: StreamReader default): a request, and the one-line JSON reply.
CONTROL_LINE_LIMIT = 64 * 1024


class SetupError(Exception):
    """The proxy cannot start as configured, or a running one cannot be
    asked over its control socket; the message says why."""


async def query_control(path: Path, cmd: str = "stats", timeout: float = 5.0) -> dict[str, object]:
    """Ask a running proxy over its control socket."""
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=CONTROL_LINE_LIMIT), timeout)
    except (OSError, TimeoutError) as exc:
        raise SetupError(f"no xenstore-cache control socket at {path}: {exc}") from exc
    try:
        w.write(json.dumps({"cmd": cmd}).encode() + b"\n")
        await w.drain()
        line = await asyncio.wait_for(r.readline(), timeout)
    except ValueError as exc:       # a line past CONTROL_LINE_LIMIT
        raise SetupError(f"the reply of the xenstore-cache control socket at {path} "
                         f"is too long: {exc}") from exc
    finally:
        w.close()
    if not line:
        raise SetupError(f"the xenstore-cache control socket at {path} sent no reply")
    rsp = json.loads(line)
    if not rsp.get("ok"):
        raise SetupError(str(rsp.get("error")))
    stats = rsp["stats"]
    assert isinstance(stats, dict)
    return stats
