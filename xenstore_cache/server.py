"""The proxy's I/O: asyncio Unix sockets around ``ProxyCore``.

* Client and upstream connections are asyncio Protocols (callbacks), not
  streams: a request moves from client to xenstored and its reply back with
  no task switch or future, which under emulation was most of the hop's cost.
* Each client connection gets its own upstream connection to xenstored, so
  transactions and watches stay per connection exactly as xenstored keeps
  them, and req_id / tx_id pass through untouched.  A client's requests are
  handled one at a time, in order (xenstored does the same per connection):
  a cache hit is never answered before the reply to an earlier request.
* The upstream reader passes replies and watch events to the client in the
  order xenstored sent them, after ``ProxyCore`` has seen them.
* The watcher holds the proxy's own connection with watches on ``/`` and the
  special domain paths.  While it is not registered the cache is off; when it
  breaks (xenstored went away) every client is disconnected, since their
  upstream connections, watches and transactions are gone too, and it
  reconnects with a back-off until xenstored is back.

The server side is framed by ``xenstore_cache.wire`` rather than pyxs: pyxs's
Packet refuses what a transparent proxy must pass on (empty values, bytes
above 0x7f, the 4.17 types 21 and 22), and its router thread dies silently on
a reply it did not expect and on EOF, which would leave the invalidation watch
dead while the cache still answered.  pyxs is used where it fits: the check at
start-up that the upstream socket is a working xenstored (``probe_upstream``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from xenstore_cache.cache import DEFAULT_MAX_ENTRIES, Cache
from xenstore_cache.control import DEFAULT_UPSTREAM, SetupError
from xenstore_cache.core import SPECIAL_WATCHES, Answer, Forward, ProxyCore, Session
from xenstore_cache.wire import Decoder, Op, Packet, ProtocolError

log = logging.getLogger(__name__)

#: Token of the proxy's own watches.
WATCH_TOKEN = b"xenstore-cache"
_READ_SIZE = 65536


@dataclass(frozen=True)
class Config:
    listen: Path
    upstream: Path
    control: Path
    max_entries: int = DEFAULT_MAX_ENTRIES
    reconnect_max_s: float = 2.0


def check_paths(cfg: Config) -> None:
    """Refuse a configuration that would make the proxy talk to itself."""
    listen = cfg.listen.resolve()
    upstream = cfg.upstream.resolve()
    if listen == upstream:
        raise SetupError(f"listen socket and upstream socket are the same path ({listen}): "
                         f"move xenstored with XENSTORED_PATH={DEFAULT_UPSTREAM}")
    if cfg.control.resolve() in (listen, upstream):
        raise SetupError(f"control socket {cfg.control} collides with a Xenstore socket")


def probe_upstream(path: Path, timeout: float = 5.0) -> None:
    """Check with pyxs that ``path`` is a xenstored that answers."""
    try:  # only needed at start-up: pyxs is the `proxy` extra
        import pyxs  # noqa: PLC0415
        from pyxs.connection import UnixSocketConnection  # noqa: PLC0415
    except ImportError as exc:
        raise SetupError("the upstream check needs pyxs: pip install 'pyxen[proxy]'") from exc

    if not path.exists():
        raise SetupError(f"upstream xenstored socket {path} does not exist "
                         f"(is xenstored running with XENSTORED_PATH={path}?)")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        router = pyxs.client.Router(UnixSocketConnection(str(path)))
        with pyxs.Client(router=router) as client:
            answer = client.get_domain_path(0)
    except (pyxs.PyXSError, OSError) as exc:
        raise SetupError(f"upstream xenstored at {path} does not answer: {exc}") from exc
    finally:
        socket.setdefaulttimeout(old)
    if answer != b"/local/domain/0":
        raise SetupError(f"upstream at {path} answered GET_DOMAIN_PATH 0 with {answer!r}: "
                         "not a xenstored")


def _prepare_socket_path(path: Path) -> None:
    """Remove a stale socket file; refuse to replace a live one or a non-socket."""
    if not path.exists() and not path.is_symlink():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    st = path.lstat()
    if not stat.S_ISSOCK(st.st_mode):
        raise SetupError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise SetupError(f"something is already listening on {path}")


#: Requests a client may have queued behind the one in flight before the
#: proxy stops reading from it (xenstored, too, handles one at a time).
MAX_QUEUED = 64


class _Upstream(asyncio.Protocol):
    """A client's own connection to xenstored: replies and its watch events."""

    def __init__(self, conn: ClientConn) -> None:
        self.conn = conn
        self.dec = Decoder()

    def data_received(self, data: bytes) -> None:
        try:
            for pkt in self.dec.feed(data):
                self.conn.from_upstream(pkt)
        except ProtocolError as exc:
            self.conn.close(f"upstream: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        # The client's watches and transactions are gone with it: end it.
        self.conn.close(f"upstream lost: {exc or 'xenstored closed the connection'}")


class ClientConn(asyncio.Protocol):
    """One client and its upstream connection, as callbacks: a request costs
    no task switch, which under emulation is most of the proxy's hop."""

    def __init__(self, proxy: CachingProxy) -> None:
        self.proxy = proxy
        self.session: Session = proxy.core.new_session()
        self.dec = Decoder()
        self.queue: deque[Packet] = deque()
        self.transport: asyncio.Transport | None = None
        self.up: asyncio.Transport | None = None
        self._fwd: Forward | None = None
        self._eof = False
        self._paused = False
        self._write_paused = False
        self.closed = False

    # -- client side ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy.clients.add(self)
        self.proxy.clients_total += 1
        transport.pause_reading()       # until the upstream connection is there
        task = asyncio.ensure_future(self._connect())
        self.proxy.tasks.add(task)
        task.add_done_callback(self.proxy.tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            up, _ = await loop.create_unix_connection(lambda: _Upstream(self),
                                                      str(self.proxy.cfg.upstream))
        except OSError as exc:
            log.warning("client %d: upstream %s unreachable (%s): disconnecting it",
                        self.session.id, self.proxy.cfg.upstream, exc)
            self.close()
            return
        assert isinstance(up, asyncio.Transport)
        if self.closed:
            up.close()
            return
        self.up = up
        assert self.transport is not None
        self.transport.resume_reading()
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.queue.extend(self.dec.feed(data))
        except ProtocolError as exc:
            self.proxy.protocol_errors += 1
            log.warning("client %d dropped: %s", self.session.id, exc)
            self.close()
            return
        self._pump()

    def eof_received(self) -> bool:
        try:
            self.dec.close()
        except ProtocolError as exc:
            log.info("client %d: %s", self.session.id, exc)
        self._eof = True
        self._pump()            # answer what it sent before hanging up, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:
        # A client that does not read its replies: stop reading its requests
        # and its connection's events until it catches up.
        self._write_paused = True
        if self.up is not None:
            self.up.pause_reading()
        self._flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.up is not None and not self.up.is_closing():
            self.up.resume_reading()
        self._flow()

    def _flow(self) -> None:
        """Read from the client only while it has room in the queue and
        reads what it is sent."""
        if self.transport is None or self.closed or self.up is None:
            return
        stop = self._write_paused or len(self.queue) >= MAX_QUEUED or self._eof
        if stop and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        elif not stop and self._paused:
            self._paused = False
            self.transport.resume_reading()

    def _send(self, pkt: Packet) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(pkt.encode())

    def _pump(self) -> None:
        """Handle queued requests in order, one forwarded at a time: a cache
        hit is never answered before the reply to an earlier request."""
        if self.up is None or self.closed:
            return
        while self._fwd is None and self.queue:
            decision = self.proxy.core.request(self.session, self.queue.popleft())
            if isinstance(decision, Answer):
                self._send(decision.packet)
                continue
            if self.up.is_closing():
                self.close()
                return
            self._fwd = decision
            self.up.write(decision.packet.encode())
        if self._eof and self._fwd is None and not self.queue:
            self.close()
        else:
            self._flow()

    # -- upstream side -------------------------------------------------------

    def from_upstream(self, pkt: Packet) -> None:
        core = self.proxy.core
        if pkt.op == Op.WATCH_EVENT:
            core.event(pkt)
            self._send(pkt)
            return
        fwd = self._fwd
        if fwd is None:
            raise ProtocolError(f"xenstored sent an unexpected {pkt.op_name} reply")
        core.reply(self.session, fwd, pkt)
        self._send(pkt)
        self._fwd = None
        self._pump()

    def close(self, why: str | None = None) -> None:
        """End the client and its upstream connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if why:
            log.info("client %d: %s", self.session.id, why)
        self.queue.clear()
        if self.up is not None:
            self.up.close()
        if self.transport is not None:
            self.transport.close()
        self.proxy.clients.discard(self)
        self.proxy.core.session_closed(self.session)


class CachingProxy:
    """The running proxy: listening socket, control socket, watcher."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.core = ProxyCore(Cache(cfg.max_entries))
        self.clients: set[ClientConn] = set()
        self.clients_total = 0
        self.protocol_errors = 0
        self.upstream_losses = 0
        self.watch_ready = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Future[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        check_paths(self.cfg)
        for path in (self.cfg.listen, self.cfg.control):
            _prepare_socket_path(path)
        up = self.cfg.upstream.stat()
        old_umask = os.umask(0o077)
        try:
            loop = asyncio.get_running_loop()
            self._servers.append(await loop.create_unix_server(
                lambda: ClientConn(self), path=str(self.cfg.listen)))
            self._servers.append(await asyncio.start_unix_server(
                self._control, path=str(self.cfg.control)))
        finally:
            os.umask(old_umask)
        # Same owner and mode as xenstored's own socket (root, 0600); the
        # control socket is root-only whatever xenstored's is.
        for path, mode in ((self.cfg.listen, stat.S_IMODE(up.st_mode)),
                           (self.cfg.control, 0o600)):
            if os.geteuid() == 0:
                os.chown(path, up.st_uid, up.st_gid)
            os.chmod(path, mode)
        self._watcher = asyncio.create_task(self._watch_loop())
        log.info("listening on %s, forwarding to %s", self.cfg.listen, self.cfg.upstream)

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for c in list(self.clients):
            c.close()
        for t in list(self.tasks):
            t.cancel()
        for t in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for path in (self.cfg.listen, self.cfg.control):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def stats(self) -> dict[str, object]:
        out = self.core.stats.as_dict()
        out.update({
            "cache_enabled": self.core.cache.enabled,
            "entries": len(self.core.cache),
            "overflows": self.core.cache.overflows,
            "clients": len(self.clients),
            "clients_total": self.clients_total,
            "protocol_errors": self.protocol_errors,
            "upstream_losses": self.upstream_losses,
        })
        return out

    # -- control ---------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            try:
                req = json.loads(line or b"{}")
                cmd = req.get("cmd") if isinstance(req, dict) else None
            except json.JSONDecodeError:
                cmd = None
            if cmd == "stats":
                rsp: dict[str, object] = {"ok": True, "stats": self.stats()}
            else:
                rsp = {"ok": False, "error": f"unknown command {cmd!r} (known: stats)"}
            writer.write(json.dumps(rsp).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass  # a slow, vanished or oversized (> 64 KiB line) caller gets nothing
        finally:
            writer.close()

    # -- the invalidation watch --------------------------------------------------

    async def _watch_loop(self) -> None:
        delay = 0.05
        while True:
            try:
                r, w = await asyncio.open_unix_connection(str(self.cfg.upstream))
            except OSError as exc:
                log.debug("upstream not reachable: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            delay = 0.05
            try:
                await self._watch(r, w)
            except (ConnectionError, ProtocolError, OSError) as exc:
                log.warning("lost the watch on xenstored (%s): cache off, clients "
                            "disconnected, reconnecting", exc)
            finally:
                w.close()
            self.upstream_losses += 1
            self.watch_ready.clear()
            self.core.upstream_down()
            for c in list(self.clients):
                c.close("the proxy lost its watch on xenstored")

    async def _watch(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        dec = Decoder()
        paths = [b"/", *(p.encode() for p in SPECIAL_WATCHES)]
        for i, p in enumerate(paths, start=1):
            w.write(Packet(Op.WATCH, i, 0, p + b"\0" + WATCH_TOKEN + b"\0").encode())
        await w.drain()
        acked = 0
        while True:
            data = await r.read(_READ_SIZE)
            if not data:
                raise ConnectionError("xenstored closed the connection")
            for pkt in dec.feed(data):
                if pkt.op == Op.WATCH_EVENT:
                    self.core.event(pkt)
                elif pkt.op == Op.WATCH:
                    acked += 1
                    if acked == len(paths):
                        self.core.upstream_up()
                        self.watch_ready.set()
                        log.info("watching xenstored: cache on")
                else:
                    raise ConnectionError(f"watch refused by xenstored: {pkt.op_name} "
                                          f"{pkt.payload!r}")

