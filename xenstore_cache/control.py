"""What other programs need of the proxy without running it: where its
sockets are, and the client of its control socket.

Only the standard library is imported (no server code, no pyxen), so the lab
can start the proxy and read its counters from code that must not pull in
the proxy itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
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
#: The counters of each ``per_op`` entry of the stats.
PER_OP_COUNTERS = ("requests", "hits", "misses", "forwarded")


class SetupError(Exception):
    """The proxy cannot start as configured, or a running one cannot be
    asked over its control socket; the message says why."""


class ControlReplyError(SetupError):
    """A proxy's control socket answered, but not with a stats reply."""


async def query_control(path: Path, cmd: str = "stats", timeout: float = 5.0) -> dict[str, object]:
    """Ask a running proxy over its control socket.  SetupError when nothing
    answers there in time, ControlReplyError when the reply is not stats."""
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=CONTROL_LINE_LIMIT), timeout)
    except (OSError, TimeoutError) as exc:
        raise SetupError(f"no xenstore-cache control socket at {path}: {exc}") from exc
    try:
        w.write(json.dumps({"cmd": cmd}).encode() + b"\n")
        await asyncio.wait_for(w.drain(), timeout)
        line = await asyncio.wait_for(r.readline(), timeout)
    except TimeoutError as exc:
        raise SetupError(f"the xenstore-cache control socket at {path} did not reply "
                         f"within {timeout:g} s") from exc
    except ValueError as exc:       # a line past CONTROL_LINE_LIMIT
        raise SetupError(f"the reply of the xenstore-cache control socket at {path} "
                         f"is too long: {exc}") from exc
    except OSError as exc:
        raise SetupError(f"the xenstore-cache control socket at {path} failed: {exc}") from exc
    finally:
        w.close()
    if not line:
        raise SetupError(f"the xenstore-cache control socket at {path} sent no reply")
    return parse_stats_reply(line, path)


def parse_stats_reply(line: bytes, path: Path) -> dict[str, object]:
    """The stats in a control reply line from ``path``; ControlReplyError,
    naming what is wrong and where from, for anything else (its error, when
    it is one)."""
    def bad(what: str) -> ControlReplyError:
        return ControlReplyError(f"the xenstore-cache control socket at {path} "
                                 f"sent a bad reply: {what}")
    try:
        rsp = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise bad(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except ValueError as exc:       # json.JSONDecodeError, and numbers too long to parse
        raise bad(f"not JSON ({exc})") from exc
    except RecursionError as exc:
        raise bad("JSON nested too deep") from exc
    if not isinstance(rsp, dict):
        raise bad(f"a JSON {type(rsp).__name__}, not an object")
    ok = rsp.get("ok")
    if ok is False:
        error = rsp.get("error")
        if not isinstance(error, str) or not error:
            raise bad('"ok" is false, with no error message')
        raise ControlReplyError(f"the xenstore-cache control socket at {path} "
                                f"refused: {_printable(error)}")
    if ok is not True:
        raise bad(f'"ok" is {ok!r:.40}, neither true nor false')
    stats = rsp.get("stats")
    if not isinstance(stats, dict):
        raise bad('no "stats" object')
    _check_per_op(stats.get("per_op", {}), bad)
    return stats


def _printable(text: str, limit: int = 500) -> str:
    """``text`` from the wire as one line of at most about ``limit`` characters."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])


def _check_per_op(per_op: object, bad: Callable[[str], ControlReplyError]) -> None:
    if not isinstance(per_op, dict):
        raise bad('"per_op" is not an object')
    for op, counts in per_op.items():
        if not op.isprintable():
            raise bad(f'"per_op" entry {op!r:.40} is not a printable name')
        if not isinstance(counts, dict):
            raise bad(f'"per_op" entry {op!r:.40} is not an object')
        for name in PER_OP_COUNTERS:
            v = counts.get(name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(f'"per_op" entry {op!r:.40} has no count {name!r} '
                          f"(got {v!r:.40})")
