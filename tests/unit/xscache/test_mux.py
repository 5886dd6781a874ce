"""The multiplexer's edges, one at a time, against the model xenstored:
watch depth and whole-string parsing, a token that no longer fits, a
RESET_WATCHES naming a foreign transaction, ID wraparound, replies to a
client that has gone, queued requests, and the barrier after an event; the
clean-up after a client, "@" paths, what a transaction records, domain
events and the counters of unknown types."""

from __future__ import annotations

import logging

import pytest

from xenstore_cache.core import OWN_TOKEN, UNKNOWN_OP, ProxyCore
from xenstore_cache.model import ModelStore
from xenstore_cache.mux import UPSTREAM, Mux, UnexpectedReply
from xenstore_cache.wire import MAX_PAYLOAD, Op, Packet, canonical_path

PROXY = 1
GUEST = 2       # another connection to xenstored, as a domU's


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


# -- clean-up after a client ------------------------------------------------------


def test_a_client_gone_while_its_watch_with_a_depth_is_in_flight_leaves_no_watch() -> None:
    """The clean-up's UNWATCH is path and token: xenstored refuses one with
    the depth (EINVAL), which left the watch behind for good."""
    h = Harness()
    c = h.mux.open()
    h.lag = True
    h.act(h.mux.request(c, Packet(Op.WATCH, 1, 0, b"/t\0tok\x005\0")))
    h.act(h.mux.close(c))
    h.lag = False
    h.flush()
    assert [w.token for w in h.store.conns[PROXY].watches] == [OWN_TOKEN] * 3
    assert h.mux.cleanup_failures == 0


def test_a_refused_clean_up_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    c = h.mux.open()
    h.call(c, Op.WATCH, b"/t\0tok\0")
    plain = h.store.handle

    def refuse_unwatch(conn: int, pkt: Packet) -> list[tuple[int, Packet]]:
        if pkt.op == Op.UNWATCH:
            return [(conn, pkt.error("EINVAL"))]
        return plain(conn, pkt)
    h.store.handle = refuse_unwatch  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="xenstore_cache.mux"):
        h.act(h.mux.close(c))
    assert h.mux.cleanup_failures == 1
    assert "UNWATCH" in caplog.text and "EINVAL" in caplog.text


def test_a_clean_up_finding_its_watch_already_gone_is_no_failure() -> None:
    """The client's own UNWATCH was in flight when it went: the clean-up's
    gets ENOENT, which is what it wanted."""
    h = Harness()
    c = h.mux.open()
    h.call(c, Op.WATCH, b"/t\0tok\0")
    h.lag = True
    h.act(h.mux.request(c, Packet(Op.UNWATCH, 2, 0, b"/t\0tok\0")))
    h.act(h.mux.close(c))
    h.lag = False
    h.flush()
    assert h.mux.cleanup_failures == 0
    assert [w.token for w in h.store.conns[PROXY].watches] == [OWN_TOKEN] * 3


# -- what the cache must not answer -------------------------------------------------


def test_a_path_starting_with_at_is_never_answered_from_the_cache() -> None:
    """xenstored refuses "@x" (EINVAL) where the proxy took it for
    /local/domain/0/@x and answered that node from the cache; GET_PERMS
    takes it as a special node's name."""
    h = Harness()
    c = h.mux.open()
    h.call(c, Op.WRITE, b"/local/domain/0/@x\0secret")
    assert h.call(c, Op.READ, b"/local/domain/0/@x\0").payload == b"secret"   # cached
    hits = h.mux.core.stats.hits.copy()
    for op in (Op.READ, Op.DIRECTORY, Op.GET_PERMS, Op.READ):
        assert h.call(c, op, b"@x\0").error_name in ("EINVAL", "ENOENT")
    assert h.call(c, Op.READ, b"@x\0").error_name == "EINVAL"
    assert h.mux.core.stats.hits == hits
    # The special nodes: their permissions, xenstored's answer each time.
    assert h.call(c, Op.GET_PERMS, b"@releaseDomain\0").payload == b"n0\0"
    assert h.call(c, Op.SET_PERMS, b"@releaseDomain\0n0\0r3\0").op == Op.SET_PERMS
    assert h.call(c, Op.GET_PERMS, b"@releaseDomain\0").payload == b"n0\0r3\0"
    assert h.call(c, Op.GET_PERMS, b"@x\0").error_name == "ENOENT"
    assert h.mux.core.stats.hits == hits
    assert canonical_path(b"@x") is None and canonical_path(b"/local/domain/0/@x") is not None


# -- transactions -----------------------------------------------------------------


def _cached_then_changed_in_a_transaction() -> tuple[Harness, int, int]:
    """Client b has /t = "old" cached; client a has changed /t to "new" in
    its open transaction 1."""
    h = Harness()
    a, b = h.mux.open(), h.mux.open()
    h.call(a, Op.WRITE, b"/t\0old")
    assert h.call(b, Op.READ, b"/t\0").payload == b"old"                 # cached
    assert h.call(a, Op.TRANSACTION_START, b"\0").payload == b"1\0"
    h.call(a, Op.WRITE, b"/t\0new", tx=1)
    return h, a, b


def test_a_malformed_transaction_end_keeps_what_the_transaction_changed() -> None:
    """A TRANSACTION_END without its NUL gets EINVAL and the transaction stays
    open (xenstored's onearg()); the later commit must still invalidate
    what the transaction wrote, as soon as it is sent."""
    h, a, b = _cached_then_changed_in_a_transaction()
    assert h.call(a, Op.TRANSACTION_END, b"T", tx=1).error_name == "EINVAL"
    assert h.call(b, Op.READ, b"/t\0").payload == b"old"                 # not committed
    h.lag = True
    h.act(h.mux.request(a, Packet(Op.TRANSACTION_END, 8, 1, b"T\0")))
    assert h.mux.core.cache.get(Op.READ, "/t") is None                  # dropped when sent
    h.lag = False
    h.flush()
    assert h.got[a][-1].payload == b"OK\0"
    assert h.mux.clients[a].session.transactions == {}
    assert h.call(b, Op.READ, b"/t\0").payload == b"new"


def test_a_transaction_end_refused_with_enomem_keeps_the_transaction() -> None:
    """xenstored answers ENOMEM when it cannot allocate a request's context,
    before it looks at the transaction, which stays open.  The client's
    transaction ID must stay usable, and a later commit must still invalidate
    what the transaction wrote, before the client reads again."""
    h, a, b = _cached_then_changed_in_a_transaction()
    # xenstored out of memory for this one request: it never reaches the model.
    out = h.mux.request(a, Packet(Op.TRANSACTION_END, 8, 1, b"T\0"))
    (upstream,) = [pkt for dest, pkt in out if dest == UPSTREAM]
    h.act([(dest, pkt) for dest, pkt in out if dest != UPSTREAM])
    h.fifo.append(upstream.error("ENOMEM"))
    h.flush()
    assert h.got[a][-1].error_name == "ENOMEM"
    assert 1 in h.mux.clients[a].tx and h.mux.clients[a].session.transactions
    # The still-open transaction goes on and commits; the cache follows it.
    assert h.call(b, Op.READ, b"/t\0").payload == b"old"                 # cached again
    h.call(a, Op.WRITE, b"/u\0new", tx=1)
    assert h.call(a, Op.TRANSACTION_END, b"T\0", tx=1).payload == b"OK\0"
    assert h.mux.clients[a].tx == {} and h.mux.clients[a].session.transactions == {}
    assert h.call(b, Op.READ, b"/t\0").payload == b"new"
    assert h.call(b, Op.READ, b"/u\0").payload == b"new"


def _starting_transactions_as(h: Harness, payload: bytes) -> None:
    """xenstored answers TRANSACTION_START with ``payload``."""
    plain = h.store.handle

    def handle(conn: int, pkt: Packet) -> list[tuple[int, Packet]]:
        out = plain(conn, pkt)
        if pkt.op != Op.TRANSACTION_START:
            return out
        return [(to, Packet(p.op, p.req_id, p.tx_id, payload)) for to, p in out]
    h.store.handle = handle  # type: ignore[method-assign]


BAD_TRANSACTION_IDS = [b"4294967296\0", b"99999999999999999999999\0", b"0\0", b"-1\0",
                       b"x\0", b"1", b"1\x002\0", b""]


@pytest.mark.parametrize("payload", BAD_TRANSACTION_IDS)
def test_a_transaction_id_the_header_cannot_carry_is_a_bad_reply(payload: bytes) -> None:
    """Found on the reply, not when a later request in the transaction
    cannot be packed: the connection to xenstored is unusable."""
    h = Harness()
    _starting_transactions_as(h, payload)
    c = h.mux.open()
    with pytest.raises(UnexpectedReply, match="started a transaction with the ID"):
        h.call(c, Op.TRANSACTION_START, b"\0")
    assert h.mux.clients[c].tx == {} and h.mux.clients[c].session.transactions == {}


@pytest.mark.parametrize("payload", BAD_TRANSACTION_IDS)
def test_a_bad_transaction_id_for_a_client_that_has_gone_is_a_bad_reply(payload: bytes) -> None:
    h = Harness()
    _starting_transactions_as(h, payload)
    c = h.mux.open()
    h.lag = True
    h.act(h.mux.request(c, Packet(Op.TRANSACTION_START, 1, 0, b"\0")))
    h.act(h.mux.close(c))
    h.lag = False
    with pytest.raises(UnexpectedReply, match="started a transaction with the ID"):
        h.flush()


def test_the_largest_transaction_id_goes_upstream_as_it_came() -> None:
    h = Harness()
    _starting_transactions_as(h, b"4294967295\0")
    c = h.mux.open()
    assert h.call(c, Op.TRANSACTION_START, b"\0").payload == b"1\0"
    (up,) = [p for dest, p in h.mux.request(c, Packet(Op.WRITE, 8, 1, b"/t\0v"))
             if dest == UPSTREAM]
    assert up.tx_id == 2**32 - 1 and len(up.encode()) == 16 + 4


def test_a_transaction_records_each_accepted_change_once() -> None:
    """Repeated and refused writes inside a transaction add nothing: what
    the proxy remembers is bounded by what xenstored holds."""
    h = Harness()
    a = h.mux.open()
    assert h.call(a, Op.TRANSACTION_START, b"\0").payload == b"1\0"
    for _ in range(50):
        assert h.call(a, Op.WRITE, b"/" + b"x" * 100 + b" bad\0v", tx=1).error_name == "EINVAL"
        assert h.call(a, Op.RM, b"/none/below\0", tx=1).error_name == "ENOENT"
        assert h.call(a, Op.WRITE, b"/t/k\0v", tx=1).op == Op.WRITE
    assert h.mux.clients[a].session.transactions == {1: {"/t/k"}}
    assert h.call(a, Op.TRANSACTION_END, b"F\0", tx=1).op == Op.TRANSACTION_END
    assert h.mux.clients[a].session.transactions == {}


def test_the_model_sends_a_changes_events_before_its_reply_as_xenstored() -> None:
    """xenstored 4.22 queues a change's events (fire_watches) before its
    reply (send_ack) on the writer's connection; a WATCH's own first event
    comes after its reply."""
    store = ModelStore()
    store.connect(1)
    ops = [p.op for _, p in store.handle(1, Packet(Op.WATCH, 1, 0, b"/t\0w\0"))]
    assert ops == [Op.WATCH, Op.WATCH_EVENT]
    ops = [p.op for _, p in store.handle(1, Packet(Op.WRITE, 2, 0, b"/t\0v"))]
    assert ops == [Op.WATCH_EVENT, Op.WRITE]
    store.handle(1, Packet(Op.TRANSACTION_START, 3, 0, b"\0"))
    store.handle(1, Packet(Op.RM, 4, 1, b"/t\0"))
    ops = [p.op for _, p in store.handle(1, Packet(Op.TRANSACTION_END, 5, 1, b"T\0"))]
    assert ops == [Op.WATCH_EVENT, Op.TRANSACTION_END]


# -- domains and counters -----------------------------------------------------------


def test_a_domain_event_drops_cached_permissions_once_however_many_watch_it() -> None:
    """Every watching client's copy of @releaseDomain used to walk the whole
    cache again; one walk, on the proxy's own copy, does."""
    h = Harness()
    clients = [h.mux.open() for _ in range(4)]
    for c in clients:
        h.call(c, Op.WATCH, b"@releaseDomain\0w\0")
    first = clients[0]
    h.call(first, Op.INTRODUCE, b"5\x001005\x005\0")
    h.call(first, Op.WRITE, b"/t\0v")
    h.call(first, Op.SET_PERMS, b"/t\0n0\0r5\0")
    assert h.call(first, Op.GET_PERMS, b"/t\0").payload == b"n0\0r5\0"   # cached
    flushes = h.mux.core.stats.perms_flushes
    seen = [len(h.events(c)) for c in clients]
    h.store.connect(GUEST)          # xenstored notices the domain died
    out = h.store.handle(GUEST, Packet(Op.RELEASE, 0, 0, b"5\0"))
    h.fifo.extend(p for to, p in out if to == PROXY)
    h.flush()
    assert [len(h.events(c)) - n for c, n in zip(clients, seen, strict=True)] == [1] * 4
    assert h.mux.core.stats.perms_flushes == flushes + 1
    assert h.call(first, Op.GET_PERMS, b"/t\0").payload == b"n0\0"


def test_unknown_request_types_share_one_counter() -> None:
    """The type is the client's to choose: one counter each grew without bound
    and made the stats line too long to read."""
    core = ProxyCore()
    mux = Mux(core)
    c = mux.open()
    for op in range(1000, 3000):
        assert mux.request(c, Packet(op, 1, 0, b"")) == [(c, Packet(Op.ERROR, 1, 0, b"ENOSYS\0"))]
    mux.request(c, Packet(Op.WATCH_EVENT, 1, 0, b""))
    stats = core.stats.as_dict()
    assert stats["per_op"] == {
        UNKNOWN_OP: {"requests": 2000, "hits": 0, "misses": 0, "forwarded": 0},
        "WATCH_EVENT": {"requests": 1, "hits": 0, "misses": 0, "forwarded": 0}}
    assert stats["local_errors"] == 2001
