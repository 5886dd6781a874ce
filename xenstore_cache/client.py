"""A minimal asyncio Xenstore client on the wire codec: requests one at a
time, watch events collected aside.  For measurements and tests; programs
should use pyxen.xenstore (libxenstore)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from xenstore_cache.wire import Decoder, Op, Packet


class WireClient:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        self.dec = Decoder()
        self.events: list[Packet] = []
        self.replies: list[Packet] = []
        self.req = 0

    @classmethod
    async def open(cls, path: Path) -> WireClient:
        r, w = await asyncio.open_unix_connection(str(path))
        return cls(r, w)

    async def recv(self, timeout: float = 5.0) -> Packet:
        """The next reply (events seen meanwhile go to ``events``)."""
        while not self.replies:
            data = await asyncio.wait_for(self.r.read(65536), timeout)
            if not data:
                raise ConnectionError("connection closed")
            for pkt in self.dec.feed(data):
                (self.events if pkt.op == Op.WATCH_EVENT else self.replies).append(pkt)
        return self.replies.pop(0)

    async def call(self, op: int, payload: bytes, tx: int = 0) -> Packet:
        self.req = (self.req + 1) & 0xFFFFFFFF
        self.w.write(Packet(op, self.req, tx, payload).encode())
        rsp = await self.recv()
        if rsp.req_id != self.req or rsp.tx_id != tx:
            raise ConnectionError(f"reply {rsp} does not match request {self.req}")
        return rsp

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed this connection."""
        try:
            while True:
                data = await asyncio.wait_for(self.r.read(65536), timeout)
                if not data:
                    return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.w.close()
