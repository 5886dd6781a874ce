"""The model xenstored on a Unix socket, for tests and experiments.

``python -m xenstore_cache.model_server PATH`` serves ``ModelStore`` at PATH.
Like xenstored it drops a connection whose header announces more than 4096
bytes, and forgets a connection's watches and transactions when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from xenstore_cache.model import ModelStore
from xenstore_cache.server import CachingProxy, Config
from xenstore_cache.wire import Decoder, ProtocolError


class ModelServer:
    def __init__(self, path: Path, store: ModelStore | None = None) -> None:
        self.path = path
        self.store = store if store is not None else ModelStore()
        self.requests = 0
        self._ids = itertools.count(1)
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._conn, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)  # as xenstored's init_sockets() does

    async def stop(self) -> None:
        """Go away like a crashed xenstored: close the socket and every connection."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers.values()):
            w.close()
        self._writers.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cid = next(self._ids)
        self.store.connect(cid)
        self._writers[cid] = writer
        dec = Decoder()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for pkt in dec.feed(data):
                    self.requests += 1
                    for to, out in self.store.handle(cid, pkt):
                        w = self._writers.get(to)
                        if w is not None and not w.is_closing():
                            w.write(out.encode())
                await writer.drain()
        except (ProtocolError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.store.disconnect(cid)
            self._writers.pop(cid, None)
            writer.close()


@contextlib.asynccontextmanager
async def model_behind_proxy(tmp: Path, start_timeout_s: float = 5.0
                             ) -> AsyncIterator[tuple[ModelServer, CachingProxy]]:
    """The model xenstored and the caching proxy in front of it, in this
    loop, on sockets in ``tmp`` (keep it short: AF_UNIX paths end at 108
    bytes): ``up`` the model's, ``xs`` the proxy's, ``ctl`` its control
    socket.  Yields once the proxy's watch on the model is registered."""
    model = ModelServer(tmp / "up")
    await model.start()
    proxy = CachingProxy(Config(listen=tmp / "xs", upstream=tmp / "up", control=tmp / "ctl",
                                reconnect_max_s=0.1))
    try:
        await proxy.start()
        await asyncio.wait_for(proxy.watch_ready.wait(), start_timeout_s)
        yield model, proxy
    finally:
        await proxy.stop()
        await model.stop()


async def _serve(path: Path) -> None:
    srv = ModelServer(path)
    await srv.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m xenstore_cache.model_server SOCKET_PATH")
    asyncio.run(_serve(Path(sys.argv[1])))
