"""The multiplexer's edges, one at a time, against the model xenstored:
watch depth and whole-string parsing, a token that no longer fits, a
RESET_WATCHES naming a foreign transaction, ID wraparound, replies to a
client that has gone, queued requests, and the barrier after an event."""

from __future__ import annotations

from xenstore_cache.core import ProxyCore
from xenstore_cache.model import ModelStore
from xenstore_cache.mux import UPSTREAM, Mux
from xenstore_cache.wire import MAX_PAYLOAD, Op, Packet

PROXY = 1


class Harness:
    """A Mux in front of a model, xenstored's messages read in order at once
    (``lag=True``: kept until ``flush``)."""

    def __init__(self) -> None:
        self.store = ModelStore()
        self.store.connect(PROXY)
        self.mux = Mux(ProxyCore())
        self.fifo: list[Packet] = []
        self.got: dict[int, list[Packet]] = {}
        self.lag = False
        self.act(self.mux.connected())
        self.flush()

    def act(self, out: list[tuple[int, Packet]]) -> None:
        for dest, pkt in out:
            if dest == UPSTREAM:
                self.fifo.extend(p for to, p in self.store.handle(PROXY, pkt) if to == PROXY)
            else:
                self.got.setdefault(dest, []).append(pkt)
        if not self.lag:
            self.flush()

    def flush(self) -> None:
        while self.fifo:
            self.act_one()

    def act_one(self) -> None:
        out = self.mux.upstream(self.fifo.pop(0))
        lag, self.lag = self.lag, True
        self.act(out)
        self.lag = lag

    def call(self, cid: int, op: int, payload: bytes, tx: int = 0, req: int = 7) -> Packet:
        before = len(self.got.get(cid, []))
        self.act(self.mux.request(cid, Packet(op, req, tx, payload)))
        self.flush()
        replies = [p for p in self.got.get(cid, [])[before:] if p.op != Op.WATCH_EVENT]
        assert len(replies) == 1, replies
        return replies[0]

    def events(self, cid: int) -> list[bytes]:
        return [p.payload for p in self.got.get(cid, []) if p.op == Op.WATCH_EVENT]


def test_a_watch_with_a_depth_and_trailing_bytes_is_passed_on() -> None:
    h = Harness()
    c = h.mux.open()
    assert h.call(c, Op.WATCH, b"/t\0tok\x000\0junk").op == Op.WATCH
    h.call(c, Op.WRITE, b"/t\0x")
    h.call(c, Op.WRITE, b"/t/deeper\0x")          # below depth 0: no event
    assert h.events(c) == [b"/t\0tok\0", b"/t\0tok\0"]
    assert h.call(c, Op.WATCH, b"/t\0a\0b\0c\0").error_name == "EINVAL"
    assert h.call(c, Op.UNWATCH, b"/t\0tok\0").op == Op.UNWATCH


def test_a_token_that_no_longer_fits_gets_e2big_not_an_exception() -> None:
    h = Harness()
    c = h.mux.open()
    path = b"/t"
    token = b"x" * (MAX_PAYLOAD - len(path) - 2)     # fits xenstored exactly
    reply = h.call(c, Op.WATCH, path + b"\0" + token + b"\0")
    assert reply.error_name == "E2BIG" and reply.req_id == 7
    assert h.mux.pending == {}                        # nothing left waiting


def test_reset_watches_naming_a_transaction_it_was_not_given_is_enoent() -> None:
    h = Harness()
    a, b = h.mux.open(), h.mux.open()
    assert h.call(a, Op.TRANSACTION_START, b"\0").payload == b"1\0"
    h.call(b, Op.WATCH, b"/t\0w\0")
    assert h.call(b, Op.RESET_WATCHES, b"", tx=1).error_name == "ENOENT"
    h.call(a, Op.WRITE, b"/t\0v")                     # b's watch is still there
    assert h.events(b) == [b"/t\0w\0", b"/t\0w\0"]
    assert h.call(a, Op.TRANSACTION_END, b"F\0", tx=1).op == Op.TRANSACTION_END


def test_req_ids_wrap_around_without_reusing_one_in_flight() -> None:
    h = Harness()
    c = h.mux.open()
    h.mux._next_req = 2**32 - 1
    h.lag = True
    h.act(h.mux.request(c, Packet(Op.READ, 1, 0, b"/local\0")))
    held = set(h.mux.pending)
    d = h.mux.open()
    h.act(h.mux.request(d, Packet(Op.READ, 1, 0, b"/tool\0")))
    assert 0 not in h.mux.pending and len(h.mux.pending) == 2
    assert held <= set(h.mux.pending)
    h.lag = False
    h.flush()
    assert [p.req_id for p in h.got[c]] == [1] and [p.req_id for p in h.got[d]] == [1]


def test_a_transaction_started_for_a_client_that_has_gone_is_aborted() -> None:
    h = Harness()
    c = h.mux.open()
    h.lag = True
    h.act(h.mux.request(c, Packet(Op.TRANSACTION_START, 1, 0, b"\0")))
    h.act(h.mux.request(c, Packet(Op.WATCH, 2, 0, b"/t\0w\0")))   # queued behind
    h.act(h.mux.close(c))
    h.lag = False
    h.flush()
    conn = h.store.conns[PROXY]
    assert conn.transactions == {}
    assert all(not w.token.endswith(b"/w") for w in conn.watches)
    assert c not in h.got                             # nothing was sent to it


def test_queued_requests_are_answered_in_order_even_when_some_are_hits() -> None:
    h = Harness()
    c = h.mux.open()
    h.call(c, Op.WRITE, b"/t\0v")
    h.call(c, Op.READ, b"/t\0")                       # now cached
    h.lag = True
    start = len(h.got[c])
    h.act(h.mux.request(c, Packet(Op.WRITE, 10, 0, b"/t\0w")))
    h.act(h.mux.request(c, Packet(Op.READ, 11, 0, b"/t\0")))
    assert len(h.got[c]) == start                     # the hit waits for the write
    h.lag = False
    h.flush()
    assert [(p.req_id, p.payload) for p in h.got[c][start:]] == [(10, b"OK\0"), (11, b"w")]


def test_after_passing_an_event_no_hit_until_the_barrier_is_answered() -> None:
    h = Harness()
    reader, writer = h.mux.open(), h.mux.open()
    h.call(reader, Op.WATCH, b"/t/state\0be\0")
    h.call(writer, Op.WRITE, b"/t/ring-ref\0old")
    h.call(reader, Op.READ, b"/t/ring-ref\0")         # cached
    hits, barriers = h.mux.core.stats.hits["READ"], h.mux.barriers
    h.lag = True
    # One change, the reader's event first: xenstored's order for a commit
    # that touched state first.
    h.fifo.append(Packet(Op.WATCH_EVENT, 0, 0, b"/t/state\0" + str(reader).encode()
                         + b"/be\0"))
    h.act_one()
    assert h.mux.barrier_pending
    h.act(h.mux.request(reader, Packet(Op.READ, 20, 0, b"/t/ring-ref\0")))
    assert h.mux.core.stats.hits["READ"] == hits      # forwarded, not a hit
    h.lag = False
    h.flush()
    assert not h.mux.barrier_pending and h.mux.barriers == barriers + 1
