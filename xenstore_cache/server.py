"""The proxy's I/O: asyncio Unix sockets around ``Mux`` and ``ProxyCore``.

* The proxy holds **one** connection to xenstored (``xenstore_cache.mux``
  says how clients share it): its own watches on ``/`` and the special
  domain paths and every client's requests travel on it, so every reply and
  event comes back in the one order xenstored sent them, and a client woken
  by an event or a reply can never read, from the cache, a value older than
  what that message followed.  However many clients it has (each ``xl``
  monitor, xenconsoled, device models), xenstored sees one connection.
* Client and upstream connections are asyncio Protocols (callbacks), not
  streams: a request moves from client to xenstored and its reply back with
  no task switch or future, which under emulation was most of the hop's cost.
* A client that does not read what it is sent has its requests left unread;
  once more than ``MAX_CLIENT_BUFFER`` bytes wait for it, it is
  disconnected (the shared connection is never held up for one client).
  While xenstored does not read what the proxy sends, no client is read.
* When the upstream connection breaks (xenstored went away) every client is
  disconnected, since their transactions and watches are gone too, the cache
  is off, and the proxy reconnects with a back-off until xenstored is back.
  Clients connecting meanwhile are refused.

The server side is framed by ``xenstore_cache.wire`` rather than pyxs: pyxs's
Packet refuses what a transparent proxy must pass on (empty values, bytes
above 0x7f, the 4.17 types 21 and 22), and its router thread dies silently on
a reply it did not expect and on EOF, which would leave the invalidation watch
dead while the cache still answered.  pyxs is used where it fits: the check at
start-up that the upstream socket is a working xenstored whose socket clients
are privileged (``probe_upstream``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from xenstore_cache.cache import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, Cache
from xenstore_cache.control import CONTROL_LINE_LIMIT, DEFAULT_UPSTREAM, SetupError
from xenstore_cache.core import ProxyCore
from xenstore_cache.mux import UPSTREAM, Mux, Out, UnexpectedReply
from xenstore_cache.wire import Decoder, Packet, ProtocolError

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Config:
    listen: Path
    upstream: Path
    control: Path
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES
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


def check_writable_file(path: Path, what: str) -> None:
    """Refuse ``path`` as a file to write later (``what`` names it in the
    error) when that would fail for a reason visible now: its directory is
    missing or not a directory, the path is a directory, or it is not
    writable."""
    parent = path.parent
    try:
        if path.is_dir():
            raise SetupError(f"{what} {path} is a directory")
        if not parent.is_dir():
            state = "is not a directory" if parent.exists() else "does not exist"
            raise SetupError(f"{what} {path}: its directory {parent} {state}")
        target = path if path.exists() else parent
        if not os.access(target, os.W_OK):
            raise SetupError(f"{what} {path}: {target} is not writable")
    except OSError as exc:          # e.g. a directory on the way that may not be searched
        raise SetupError(f"{what} {path}: {exc}") from exc


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
            if answer != b"/local/domain/0":
                raise SetupError(f"upstream at {path} answered GET_DOMAIN_PATH 0 with "
                                 f"{answer!r}: not a xenstored")
            # All clients share the proxy's connection: it must see everything.
            try:
                client.list(b"/")
            except pyxs.PyXSError as exc:
                raise SetupError(f"the socket clients of xenstored at {path} are not "
                                 f"privileged (listing / failed: {exc}); the proxy would "
                                 "give every client the same rights: refusing") from exc
    except (pyxs.PyXSError, OSError) as exc:
        raise SetupError(f"upstream xenstored at {path} does not answer: {exc}") from exc
    finally:
        socket.setdefaulttimeout(old)


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
#: Bytes waiting for a client that does not read before it is disconnected.
MAX_CLIENT_BUFFER = 4 << 20
#: Requests queued by one client (reading stops at MAX_QUEUED, but one read
#: may hold thousands) beyond which it is disconnected.
MAX_QUEUED_HARD = 1024


class _Upstream(asyncio.Protocol):
    """The proxy's one connection to xenstored."""

    def __init__(self, proxy: CachingProxy) -> None:
        self.proxy = proxy
        self.dec = Decoder()
        self.transport: asyncio.Transport | None = None
        self.gone: asyncio.Future[Exception | None] = \
            asyncio.get_running_loop().create_future()
        self.is_lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.is_lost:
            return
        try:
            for pkt in self.dec.feed(data):
                self.proxy.dispatch(self.proxy.mux.upstream(pkt))
        except (ProtocolError, UnexpectedReply, ValueError) as exc:
            log.warning("upstream: %s", exc)
            self.lost(exc)
            return
        self.proxy.check_ready()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost(exc)

    def lost(self, exc: Exception | None) -> None:
        """At once, not when the reconnecting task next runs: no hit from a
        cache that can no longer be invalidated, no request into the void."""
        if self.is_lost:
            return
        self.is_lost = True
        if not self.gone.done():        # cancelled with the task awaiting it
            self.gone.set_result(exc)
        if self.transport is not None:
            self.transport.close()
        self.proxy.upstream_lost()

    def pause_writing(self) -> None:
        self.proxy.upstream_full(True)

    def resume_writing(self) -> None:
        self.proxy.upstream_full(False)


class ClientConn(asyncio.Protocol):
    """One client, as callbacks: a request costs no task switch, which under
    emulation is most of the proxy's hop."""

    def __init__(self, proxy: CachingProxy) -> None:
        self.proxy = proxy
        self.id = 0
        self.dec = Decoder()
        self.transport: asyncio.Transport | None = None
        self._eof = False
        self._paused = False
        self._write_paused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy.clients_total += 1
        if not self.proxy.upstream_connected():
            log.warning("a client connected while xenstored is not: disconnecting it")
            self.closed = True
            transport.close()
            return
        self.id = self.proxy.mux.open()
        self.proxy.clients[self.id] = self
        self.flow()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            packets = self.dec.feed(data)
        except ProtocolError as exc:
            self.proxy.protocol_errors += 1
            log.warning("client %d dropped: %s", self.id, exc)
            self.close()
            return
        for pkt in packets:
            if self.closed:
                return
            self.proxy.dispatch(self.proxy.mux.request(self.id, pkt))
            if self.proxy.mux.queued(self.id) > MAX_QUEUED_HARD:
                self.close(f"disconnected: more than {MAX_QUEUED_HARD} requests queued")
                return
        self.flow()

    def eof_received(self) -> bool:
        try:
            self.dec.close()
        except ProtocolError as exc:
            log.info("client %d: %s", self.id, exc)
        self._eof = True
        self.flow()             # answer what it sent before hanging up, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:
        self._write_paused = True
        self.flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.flow()

    def send(self, pkt: Packet) -> None:
        if self.transport is None or self.closed or self.transport.is_closing():
            return
        self.transport.write(pkt.encode())
        if self.transport.get_write_buffer_size() > MAX_CLIENT_BUFFER:
            self.close(f"disconnected: more than {MAX_CLIENT_BUFFER} bytes unread")

    def flow(self) -> None:
        """Read from the client only while it has room in the queue, reads
        what it is sent, and xenstored reads what the proxy sends; close it
        once it has hung up and everything it asked is answered."""
        if self.transport is None or self.closed:
            return
        if self._eof and not self.proxy.mux.busy(self.id):
            self.close()
            return
        stop = (self._write_paused or self._eof or self.proxy.upstream_paused
                or self.proxy.mux.queued(self.id) >= MAX_QUEUED)
        if stop and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        elif not stop and self._paused:
            self._paused = False
            self.transport.resume_reading()

    def close(self, why: str | None = None) -> None:
        """End the client (idempotent); its watches and transactions go."""
        if self.closed:
            return
        self.closed = True
        if why:
            log.info("client %d: %s", self.id, why)
        if self.transport is not None:
            self.transport.close()
        if self.proxy.clients.pop(self.id, None) is not None:
            self.proxy.dispatch(self.proxy.mux.close(self.id))


class CachingProxy:
    """The running proxy: listening socket, control socket, watcher."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.core = ProxyCore(Cache(cfg.max_entries, cfg.max_bytes))
        self.mux = Mux(self.core)
        self.clients: dict[int, ClientConn] = {}
        self.upstream: _Upstream | None = None
        self.upstream_paused = False
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
                self._control, path=str(self.cfg.control), limit=CONTROL_LINE_LIMIT))
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
        for c in list(self.clients.values()):
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
            "cache_bytes": self.core.cache.size,
            "cache_nodes": self.core.cache.nodes,
            "overflows": self.core.cache.overflows,
            "cleanup_failures": self.mux.cleanup_failures,
            "clients": len(self.clients),
            "clients_total": self.clients_total,
            "upstream_connections": 1 if self.upstream_connected() else 0,
            "upstream_requests_in_flight": len(self.mux.pending),
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
                rsp = {"ok": False, "error": f"unknown command {cmd!r:.100} (known: stats)"}
            line = json.dumps(rsp).encode() + b"\n"
            if len(line) > CONTROL_LINE_LIMIT:      # the caller could not read it
                log.error("control reply of %d bytes exceeds %d", len(line), CONTROL_LINE_LIMIT)
                line = json.dumps({"ok": False, "error": f"reply of {len(line)} bytes exceeds "
                                   f"the control line limit"}).encode() + b"\n"
            writer.write(line)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass  # a slow, vanished or oversized (> 64 KiB line) caller gets nothing
        finally:
            writer.close()

    # -- the upstream connection ------------------------------------------------

    def upstream_connected(self) -> bool:
        return self.upstream is not None and self.upstream.transport is not None \
            and not self.upstream.transport.is_closing()

    def dispatch(self, out: Out) -> None:
        """Send what the multiplexer says, then let every client it wrote to
        read again (or close, if it had hung up and is answered)."""
        touched: set[int] = set()
        for dest, pkt in out:
            if dest == UPSTREAM:
                if self.upstream_connected():
                    assert self.upstream is not None and self.upstream.transport is not None
                    self.upstream.transport.write(pkt.encode())
                continue
            c = self.clients.get(dest)
            if c is not None:
                c.send(pkt)
                touched.add(dest)
        for cid in touched:
            c = self.clients.get(cid)
            if c is not None:
                c.flow()

    def check_ready(self) -> None:
        if self.mux.ready and not self.watch_ready.is_set():
            self.watch_ready.set()
            log.info("watching xenstored: cache on")

    def upstream_full(self, full: bool) -> None:
        """xenstored is (not) reading what the proxy sends: stop (resume)
        reading the clients' requests."""
        self.upstream_paused = full
        for c in list(self.clients.values()):
            c.flow()

    async def _watch_loop(self) -> None:
        delay = 0.05
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, up = await loop.create_unix_connection(lambda: _Upstream(self),
                                                          str(self.cfg.upstream))
            except OSError as exc:
                log.debug("upstream not reachable: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            delay = 0.05
            self.upstream = up
            try:
                self.dispatch(self.mux.connected())
                why = await up.gone
                log.warning("lost the connection to xenstored (%s): cache off, clients "
                            "disconnected, reconnecting", why or "xenstored closed it")
            finally:
                up.lost(None)           # cancelled (the proxy stops): the same

    def upstream_lost(self) -> None:
        """The connection to xenstored is gone: cache off, every client
        disconnected (their transactions and watches went with it)."""
        self.upstream = None
        self.upstream_losses += 1
        self.watch_ready.clear()
        self.upstream_paused = False
        for cid in self.mux.lost():
            c = self.clients.pop(cid, None)
            if c is not None:
                c.close("the proxy lost its connection to xenstored")
