"""Many clients over one connection to xenstored, without I/O.

The proxy holds one upstream connection.  Its own watches (on ``/`` and the
special domain paths) and every client's requests share it, so xenstored
keeps one connection for all of them, and everything it sends comes back in
one order: when the proxy answers a request from the cache it has consumed
every message xenstored sent before the reply or event the client last
received, the invalidations for every change committed before those
included.  A hit is never older than anything the proxy has passed on to any
client.

What xenstored keeps per connection, the multiplexer keeps per client:

* **req_id**: each request forwarded gets an upstream req_id of the
  proxy's; the reply gets the client's back.
* **Transactions**: a client sees its own transaction IDs, numbered from 1
  as xenstored numbers a connection's; they map to xenstored's IDs on the
  shared connection.  A client naming an ID it was not given gets ENOENT, as
  from xenstored: no client can use another's transaction.
* **Watches**: a client's token goes upstream as ``<client>/<token>``; its
  events come back to that client only, with its token.
* **RESET_WATCHES** becomes that client's own UNWATCHes and transaction
  aborts; the client gets its reply once xenstored has processed them all,
  so no event of a removed watch follows the reply.
* **A client that goes away**: its watches are removed and its
  transactions aborted; replies still due to it are dropped (a transaction
  or watch they create is removed again).

**One change, several events.**  xenstored fires the watches of one change
node by node (a commit in the order the transaction first touched its nodes,
a recursive RM the removed children's exact watches before the subtree's
event), so a client's event for one node can come before the proxy's own
event for another node of the same change.  After passing a client an event
the proxy therefore answers nothing from the cache until xenstored has
replied to a request the proxy sent after that event (a barrier: xenstored
handles requests one at a time, so by then every event of that change has
been read).

Requests of one client are handled one at a time, in order, as xenstored
handles a connection's: a cache hit is never answered before the reply to an
earlier request.  Cache decisions are ``ProxyCore``'s, made on the client's
own view of each packet.

Limits of sharing: a client's watch token grows by its prefix, so a WATCH
whose payload would then pass 4096 bytes gets E2BIG (xenstored would have
taken it), and an event xenstored cannot fit in 4096 bytes with the prefix is
dropped by xenstored.  What xenstored keeps per connection beyond the above is
shared: a live update started by one client can be checked or aborted by
another, and its transaction-age check sees all clients' transactions as one
connection's.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from xenstore_cache.core import (OWN_TOKEN, SPECIAL_WATCHES, Answer, Forward, ProxyCore, Session,
                                 transaction_ended)
from xenstore_cache.wire import MAX_PAYLOAD, NO_TX_OPS, Op, Packet, one_arg, split_args

log = logging.getLogger(__name__)

#: Where a packet goes: a client's ID, or upstream to xenstored.
UPSTREAM = 0
#: Paths the proxy watches for its invalidations.
OWN_WATCHES = (b"/", *(p.encode() for p in SPECIAL_WATCHES))
#: xenstored's IDs are 32 bits; 0 means "none".
_ID_LIMIT = 1 << 32
#: The barrier: a request xenstored answers at once, changing nothing.
BARRIER = Packet(Op.GET_DOMAIN_PATH, 0, 0, b"0\0")

Out = list[tuple[int, Packet]]


@dataclass
class _Compound:
    """A client's RESET_WATCHES, waiting for the requests it became."""

    request: Packet
    remaining: int


@dataclass
class _Client:
    id: int
    session: Session
    queue: deque[Packet] = field(default_factory=deque)
    #: The request being handled: forwarded (Forward) or a RESET_WATCHES.
    inflight: Forward | _Compound | None = None
    #: Transaction IDs: the client's -> xenstored's.
    tx: dict[int, int] = field(default_factory=dict)
    next_tx: int = 1
    #: Watches registered for it upstream: (path, the client's token).
    watches: set[tuple[bytes, bytes]] = field(default_factory=set)


@dataclass(frozen=True)
class _Pending:
    """A request sent upstream, by whom (None: the proxy itself)."""

    client: int | None
    upstream: Packet
    forward: Forward | None = None      # a client's request, as the core planned it
    reset: bool = False                 # part of that client's RESET_WATCHES
    barrier: bool = False               # the proxy's barrier after an event


class Mux:
    """The proxy's protocol state: feed it client requests
    (``request``), everything xenstored sends (``upstream``), clients coming
    and going (``open``/``close``) and the upstream connection's life
    (``connected``/``lost``); each call returns the packets to send, as
    (destination, packet) with destination ``UPSTREAM`` or a client's ID."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.clients: dict[int, _Client] = {}
        self.pending: dict[int, _Pending] = {}
        self.ready = False
        #: An event was passed to a client and the barrier after it is not
        #: answered yet: no cache hits meanwhile.
        self.barrier_pending = False
        self.barriers = 0
        #: Clean-ups (a gone or resetting client's UNWATCH or abort) that
        #: xenstored refused with anything but ENOENT ("already gone"): what
        #: they were to remove may be left behind.
        self.cleanup_failures = 0
        self._next_client = 1
        self._next_req = 1
        self._own_acks = 0

    # -- the upstream connection -------------------------------------------------

    def connected(self) -> Out:
        """A new upstream connection: register the proxy's watches on it.  The
        cache goes on when xenstored has acknowledged them all."""
        self.ready = False
        self.barrier_pending = False
        self._own_acks = 0
        return [(UPSTREAM, self._send(None, Packet(Op.WATCH, 0, 0, p + b"\0" + OWN_TOKEN + b"\0")))
                for p in OWN_WATCHES]

    def lost(self) -> list[int]:
        """The upstream connection is gone, and with it every client's
        transactions and watches: the clients to disconnect.  The cache is off."""
        self.ready = False
        self.barrier_pending = False
        self.core.upstream_down()
        self.pending.clear()
        gone = list(self.clients)
        for cid in gone:
            self.core.session_closed(self.clients.pop(cid).session)
        return gone

    # -- clients -----------------------------------------------------------------

    def open(self) -> int:
        """A new client; its ID is never reused."""
        cid = self._next_client
        self._next_client += 1
        self.clients[cid] = _Client(cid, self.core.new_session())
        return cid

    def queued(self, cid: int) -> int:
        c = self.clients.get(cid)
        return len(c.queue) if c is not None else 0

    def busy(self, cid: int) -> bool:
        """Whether the client has a request being handled or waiting."""
        c = self.clients.get(cid)
        return c is not None and (c.inflight is not None or bool(c.queue))

    def close(self, cid: int) -> Out:
        """The client went away: remove its watches, abort its transactions."""
        c = self.clients.pop(cid, None)
        if c is None:
            return []
        self.core.session_closed(c.session)
        return self._cleanup(c, reset=False)

    def request(self, cid: int, pkt: Packet) -> Out:
        """A request from a client: queued behind the one being handled."""
        c = self.clients[cid]
        c.queue.append(pkt)
        return self._pump(c)

    # -- what xenstored sends ------------------------------------------------------

    def upstream(self, pkt: Packet) -> Out:
        if pkt.op == Op.WATCH_EVENT:
            return self._event(pkt)
        p = self.pending.pop(pkt.req_id, None)
        if p is None:
            raise UnexpectedReply(f"xenstored sent a {pkt.op_name} reply to req_id "
                                  f"{pkt.req_id}, which the proxy did not send")
        if p.barrier:
            self.barrier_pending = False
            return []
        if p.client is None:
            return self._own_reply(pkt, p)
        c = self.clients.get(p.client)
        if p.reset:
            return self._reset_step(c, p, pkt)
        if p.forward is None:      # cannot happen: a client's request has its plan
            return []
        return self._client_reply(c, p, pkt)

    # -- inside --------------------------------------------------------------------

    def _send(self, client: int | None, pkt: Packet, forward: Forward | None = None,
              reset: bool = False, barrier: bool = False) -> Packet:
        """``pkt`` with an upstream req_id of the proxy's, remembered."""
        while self._next_req in self.pending or self._next_req == 0:
            self._next_req = (self._next_req + 1) % _ID_LIMIT
        req_id = self._next_req
        self._next_req = (self._next_req + 1) % _ID_LIMIT
        up = Packet(pkt.op, req_id, pkt.tx_id, pkt.payload)
        self.pending[req_id] = _Pending(client, up, forward, reset, barrier)
        return up

    def _pump(self, c: _Client) -> Out:
        out: Out = []
        while c.inflight is None and c.queue:
            pkt = c.queue.popleft()
            if pkt.op == Op.RESET_WATCHES:
                if pkt.tx_id != 0 and pkt.tx_id not in c.tx:
                    out.append((c.id, pkt.error("ENOENT")))   # as xenstored checks
                    continue
                out += self._reset(c, pkt)
                continue
            decision = self.core.request(c.session, pkt, may_hit=not self.barrier_pending)
            if isinstance(decision, Answer):
                out.append((c.id, decision.packet))
                continue
            up = self._upstream_view(c, decision.packet)
            if isinstance(up, Answer):      # refused here, as xenstored would
                out.append((c.id, up.packet))
                continue
            c.inflight = decision
            out.append((UPSTREAM, self._send(c.id, up, decision)))
        return out

    def _upstream_view(self, c: _Client, pkt: Packet) -> Packet | Answer:
        """The client's request as it goes upstream: its transaction's ID on
        the shared connection, its watch token prefixed with its ID."""
        tx = 0
        if pkt.op not in NO_TX_OPS and pkt.tx_id != 0:
            if pkt.tx_id not in c.tx:
                return Answer(pkt.error("ENOENT"))
            tx = c.tx[pkt.tx_id]
        payload = pkt.payload
        if pkt.op in (Op.WATCH, Op.UNWATCH):
            # xenstored reads whole strings and ignores bytes after the last
            # NUL: path, token, and for WATCH (4.21 and later) a depth.
            args = payload.split(b"\0")[:-1]
            if len(args) not in ((2, 3) if pkt.op == Op.WATCH else (2,)):
                return Answer(pkt.error("EINVAL"))
            args[1] = self._token(c.id, args[1])
            payload = b"".join(a + b"\0" for a in args)
            if len(payload) > MAX_PAYLOAD:
                return Answer(pkt.error("E2BIG"))
        return Packet(pkt.op, pkt.req_id, tx, payload)

    @staticmethod
    def _token(cid: int, token: bytes) -> bytes:
        return str(cid).encode() + b"/" + token

    def _client_reply(self, c: _Client | None, p: _Pending, pkt: Packet) -> Out:
        fwd = p.forward
        assert fwd is not None
        req = fwd.packet
        payload = pkt.payload
        upstream_tx = None
        if req.op == Op.TRANSACTION_START and pkt.op == Op.TRANSACTION_START:
            upstream_tx = started_transaction(pkt)      # before anyone records it
            if c is not None:
                payload = str(self._new_tx(c, upstream_tx)).encode() + b"\0"
        reply = Packet(pkt.op, req.req_id, req.tx_id, payload)
        self.core.reply(c.session if c is not None else Session(0), fwd, reply)
        if c is None:
            return self._orphan(p, pkt, upstream_tx)
        if req.op == Op.TRANSACTION_END and req.tx_id in c.tx and transaction_ended(reply):
            del c.tx[req.tx_id]
        elif req.op == Op.WATCH and pkt.op == Op.WATCH:
            c.watches.add(self._watch_key(req))
        elif req.op == Op.UNWATCH and pkt.op == Op.UNWATCH:
            c.watches.discard(self._watch_key(req))
        c.inflight = None
        return [(c.id, reply), *self._pump(c)]

    @staticmethod
    def _watch_key(req: Packet) -> tuple[bytes, bytes]:
        path, token = req.payload.split(b"\0")[:2]
        return path, token

    def _new_tx(self, c: _Client, upstream_tx: int) -> int:
        while c.next_tx in c.tx or c.next_tx == 0:
            c.next_tx = (c.next_tx + 1) % _ID_LIMIT
        mine = c.next_tx
        c.next_tx = (c.next_tx + 1) % _ID_LIMIT
        c.tx[mine] = upstream_tx
        return mine

    def _orphan(self, p: _Pending, pkt: Packet, upstream_tx: int | None) -> Out:
        """A reply to a client that has gone: undo what it created (the
        transaction ``upstream_tx`` it started, a watch it set)."""
        up = p.upstream
        if upstream_tx is not None:
            return [(UPSTREAM, self._send(None, Packet(Op.TRANSACTION_END, 0,
                                                       upstream_tx, b"F\0")))]
        if up.op == Op.WATCH and pkt.op == Op.WATCH:
            # Path and token only: xenstored's UNWATCH takes no depth (EINVAL).
            path, token = self._watch_key(up)
            return [(UPSTREAM, self._send(None, Packet(Op.UNWATCH, 0, 0,
                                                       path + b"\0" + token + b"\0")))]
        return []

    def _cleanup(self, c: _Client, reset: bool) -> Out:
        """UNWATCH every watch of the client and abort its transactions."""
        out: Out = []
        for path, token in sorted(c.watches):
            out.append((UPSTREAM, self._send(
                c.id if reset else None,
                Packet(Op.UNWATCH, 0, 0, path + b"\0" + self._token(c.id, token) + b"\0"),
                reset=reset)))
        for tx in sorted(c.tx.values()):
            out.append((UPSTREAM, self._send(c.id if reset else None,
                                             Packet(Op.TRANSACTION_END, 0, tx, b"F\0"),
                                             reset=reset)))
        c.watches.clear()
        c.tx.clear()
        return out

    def _reset(self, c: _Client, pkt: Packet) -> Out:
        self.core.request(c.session, pkt)      # counted; the core forgets its transactions
        out = self._cleanup(c, reset=True)
        if not out:
            return [(c.id, pkt.reply(Op.RESET_WATCHES, b"OK\0"))]
        c.inflight = _Compound(pkt, len(out))
        return out

    def _reset_step(self, c: _Client | None, p: _Pending, pkt: Packet) -> Out:
        self._check_cleanup(p, pkt)
        if c is None or not isinstance(c.inflight, _Compound):
            return []
        c.inflight.remaining -= 1
        if c.inflight.remaining:
            return []
        req = c.inflight.request
        c.inflight = None
        return [(c.id, req.reply(Op.RESET_WATCHES, b"OK\0")), *self._pump(c)]

    def _check_cleanup(self, p: _Pending, pkt: Packet) -> None:
        """Count and log a clean-up xenstored refused.  ENOENT is no failure:
        the watch or transaction had gone already (a client that goes away
        while its own UNWATCH or TRANSACTION_END is in flight)."""
        name = pkt.error_name
        if name is None:
            return
        what = f"{p.upstream.op_name} {p.upstream.payload!r:.200} (tx {p.upstream.tx_id})"
        if name == "ENOENT":
            log.debug("clean-up %s: already gone", what)
            return
        self.cleanup_failures += 1
        log.warning("xenstored refused the clean-up %s: %s; it may be left behind", what, name)

    def _own_reply(self, pkt: Packet, p: _Pending) -> Out:
        if p.upstream.op != Op.WATCH:
            self._check_cleanup(p, pkt)   # a cleanup's UNWATCH or TRANSACTION_END
            return []
        if pkt.op != Op.WATCH:
            raise UnexpectedReply(f"xenstored refused the proxy's watch on "
                                  f"{split_args(p.upstream.payload)[0]!r}: {pkt.payload!r}")
        self._own_acks += 1
        if self._own_acks == len(OWN_WATCHES):
            self.ready = True
            self.core.upstream_up()
        return []

    def _event(self, pkt: Packet) -> Out:
        # Every event invalidates before anyone sees anything sent after it.
        self.core.event(pkt)
        args = split_args(pkt.payload)
        if len(args) != 2:
            return []
        path, token = args
        cid_raw, sep, mine = token.partition(b"/")
        if not sep or not cid_raw.isdigit():
            return []                 # the proxy's own, or not one it registered
        c = self.clients.get(int(cid_raw))
        if c is None:
            return []                 # a client that has gone
        out: Out = [(c.id, Packet(Op.WATCH_EVENT, 0, 0, path + b"\0" + mine + b"\0"))]
        if not self.barrier_pending:
            self.barrier_pending = True
            self.barriers += 1
            out.append((UPSTREAM, self._send(None, BARRIER, barrier=True)))
        return out


class UnexpectedReply(Exception):
    """xenstored sent what the proxy cannot match: the connection is unusable."""


def started_transaction(reply: Packet) -> int:
    """The ID in xenstored's reply to TRANSACTION_START: a decimal number
    and a NUL, 1 to 2**32 - 1 (the header's 32-bit field, 0 being no
    transaction).  UnexpectedReply for anything else: the proxy could
    neither name that transaction to xenstored nor end it."""
    raw = one_arg(reply.payload)
    # The length bound keeps int() from parsing a long string of digits.
    if raw is None or not raw.isdigit() or len(raw) > len(str(_ID_LIMIT)) \
            or not 0 < int(raw) < _ID_LIMIT:
        raise UnexpectedReply(f"xenstored started a transaction with the ID "
                              f"{reply.payload!r:.60}: not a number from 1 to {_ID_LIMIT - 1}")
    return int(raw)
