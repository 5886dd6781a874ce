"""The proxy is transparent: every reply and event through it equals the model's alone.

Two model xenstoreds receive the same operations at the same moments: one
from each client on its own connection (the reference), one from the
clients multiplexed by ``Mux`` onto the proxy's single connection (sans-I/O,
so Hypothesis controls every interleaving).  Everything the model behind the
proxy sends goes into one FIFO, which Hypothesis drains when it likes: the
proxy reads replies and events in the order xenstored sent them.  A "guest"
also writes to both models directly, as domUs do through their rings.

The contract checked:

* every reply a client receives through the proxy equals the reference's,
  and so do the watch events each client receives;
* an answer from the cache may differ from the reference only for a path
  with a change the proxy has not read the event of yet, and which nothing
  the proxy has passed to any client since followed: no client ever reads a
  value older than anything it or another client has been sent;
* once the FIFO is drained, everything cached equals the reference.

``test_freshness_case`` is the case a multiplexer with a separate watch
connection got wrong; its mutation check shows the test sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from xenstore_cache.core import OWN_TOKEN, ProxyCore, absolute_path
from xenstore_cache.model import ModelStore
from xenstore_cache.mux import UPSTREAM, Mux
from xenstore_cache.wire import Op, Packet, is_below

CLIENTS = (1, 2, 3)
PROXY = 100     # the proxy's one connection in the model behind it
GUEST = 200     # writes directly, like a domU

# Few nodes, so that operations meet on the same ones often: nested, relative
# (below /local/domain/0) and invalid paths included; "@a" is no relative
# path (EINVAL), "@releaseDomain" a special node (GET_PERMS, SET_PERMS).
GOOD = ["/t", "/t/a", "/t/a/b", "/t/b", "/t/a/c", "a", "/local/domain/0/a", "a/b",
        "/local/domain/0/@a"]
BAD = ["/t/", "//t", "/t//a", "", "/t/a b", "/t/\u00e9", "/", "@a", "@releaseDomain"]
ABS_PATHS = st.sampled_from([p for p in GOOD if p.startswith("/t/")])
PATHS = st.sampled_from(GOOD * 4 + BAD)
VALUES = st.binary(max_size=12) | st.sampled_from([b"", b"\0", b"\xff\0x"])
TOKENS = st.sampled_from([b"t1", b"t2"])
PERMS = st.lists(st.sampled_from([b"n0", b"r1", b"w2", b"b0", b"x1", b"r", b"r70000"]),
                 min_size=0, max_size=3)


def _p(path: str) -> bytes:
    return path.encode()


def _reply(out: list[tuple[int, Packet]], conn: int
           ) -> tuple[Packet, list[tuple[int, Packet]]]:
    """The reply to ``conn`` among what a model sent (a change's events come
    before it on ``conn``, as xenstored sends them), and the events."""
    i = next(i for i, (to, p) in enumerate(out) if to == conn and p.op != Op.WATCH_EVENT)
    return out[i][1], out[:i] + out[i + 1:]


class ProxyEquivalence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ref = ModelStore()
        self.sut = ModelStore()
        self.core = ProxyCore()
        self.mux = Mux(self.core)
        self.cid: dict[int, int] = {}
        self.ref_events: dict[int, list[Packet]] = {c: [] for c in CLIENTS}
        self.sut_events: dict[int, list[Packet]] = {c: [] for c in CLIENTS}
        #: What the model behind the proxy sent, not read yet: (when, packet).
        self.fifo: list[tuple[int, Packet]] = []
        self.clock = 0
        #: The latest moment of anything the proxy has read from the FIFO.
        self.read_up_to = 0
        #: Changes (when, path or "@...") reported by the proxy's watch.
        self.changes: list[tuple[int, bytes]] = []
        #: The reference's reply each client is waiting for through the proxy.
        self.awaited: dict[int, Packet] = {}
        self.req_id = 0
        for c in CLIENTS:
            self.ref.connect(c)
            self.cid[c] = self.mux.open()
        for m in (self.ref, self.sut):
            m.connect(GUEST)
        self.sut.connect(PROXY)
        self._upstream(self.mux.connected())
        self.drain()
        assert self.mux.ready

    # -- plumbing ---------------------------------------------------------------

    def _client(self, cid: int) -> int:
        return next(c for c, i in self.cid.items() if i == cid)

    def _sut_handle(self, conn: int, pkt: Packet) -> list[tuple[int, Packet]]:
        """The model behind the proxy handles ``pkt`` now; what it sends the
        proxy joins the FIFO."""
        self.clock += 1
        out = self.sut.handle(conn, pkt)
        for to, sent in out:
            if to == PROXY:
                self.fifo.append((self.clock, sent))
                args = sent.payload.split(b"\0")
                if sent.op == Op.WATCH_EVENT and len(args) > 1 and args[1] == OWN_TOKEN:
                    self.changes.append((self.clock, args[0]))
        return out

    def _upstream(self, out: list[tuple[int, Packet]]) -> None:
        for dest, pkt in out:
            if dest == UPSTREAM:
                self._sut_handle(PROXY, pkt)
            else:
                self._to_client(self._client(dest), pkt)

    def _to_client(self, client: int, pkt: Packet) -> None:
        if pkt.op == Op.WATCH_EVENT:
            self.sut_events[client].append(pkt)
            return
        want = self.awaited.pop(client)
        assert pkt == want, (want, pkt)

    def _route_ref(self, out: list[tuple[int, Packet]]) -> None:
        for to, pkt in out:
            assert pkt.op == Op.WATCH_EVENT
            if to in CLIENTS:
                self.ref_events[to].append(pkt)

    def _stale_possible(self, pkt: Packet) -> bool:
        """Whether a change the proxy has not read of, and nothing read
        after, touches what ``pkt`` looks up."""
        if pkt.op not in (Op.READ, Op.DIRECTORY, Op.GET_PERMS) or pkt.tx_id != 0:
            return False
        path = absolute_path(pkt.payload.rstrip(b"\0"))
        if path is None:
            return False
        for when, raw in self.changes:
            if when <= self.read_up_to:
                continue
            if raw.startswith(b"@"):
                if pkt.op == Op.GET_PERMS:
                    return True
                continue
            changed = absolute_path(raw)
            if changed is not None and (is_below(path, changed) or is_below(changed, path)):
                return True
        return False

    def send(self, client: int, op: int, payload: bytes, tx_id: int = 0) -> Packet:
        """``client`` sends a request (after its previous one was answered)."""
        if client in self.awaited:
            self.drain()
        self.req_id += 1
        pkt = Packet(op, self.req_id, tx_id, payload)
        stale_ok = self._stale_possible(pkt)
        ref_out = self.ref.handle(client, pkt)
        ref_reply, ref_events = _reply(ref_out, client)
        self._route_ref(ref_events)
        out = self.mux.request(self.cid[client], pkt)
        answered = [p for d, p in out if d == self.cid[client]]
        if answered:                       # from the cache, or refused by the proxy
            assert len(out) == 1
            if not stale_ok:
                assert answered[0] == ref_reply, (pkt, ref_reply, answered[0])
            else:
                assert answered[0].req_id == ref_reply.req_id
        else:
            self.awaited[client] = ref_reply
            self._upstream(out)
        return ref_reply

    # -- rules: the FIFO ----------------------------------------------------------

    @precondition(lambda self: bool(self.fifo))
    @rule(n=st.integers(1, 6))
    def deliver(self, n: int) -> None:
        for _ in range(min(n, len(self.fifo))):
            when, pkt = self.fifo.pop(0)
            self.read_up_to = max(self.read_up_to, when)
            self._upstream(self.mux.upstream(pkt))

    def drain(self) -> None:
        while self.fifo:
            self.deliver(len(self.fifo))

    # -- rules ------------------------------------------------------------------

    @rule(client=st.sampled_from(CLIENTS), path=PATHS,
          op=st.sampled_from([Op.READ, Op.DIRECTORY, Op.GET_PERMS, Op.READ]))
    def lookup(self, client: int, path: str, op: Op) -> None:
        self.send(client, op, _p(path) + b"\0")

    @rule(client=st.sampled_from(CLIENTS), path=PATHS, value=VALUES)
    def write(self, client: int, path: str, value: bytes) -> None:
        self.send(client, Op.WRITE, _p(path) + b"\0" + value)

    @rule(client=st.sampled_from(CLIENTS), other=st.sampled_from(CLIENTS), path=PATHS,
          op=st.sampled_from([Op.WRITE, Op.MKDIR, Op.RM, Op.SET_PERMS]), value=VALUES,
          look=st.sampled_from([Op.READ, Op.DIRECTORY, Op.GET_PERMS]),
          near=st.sampled_from(["same", "parent", "grandparent", "child", "child_b"]))
    def change_between_lookups(self, client: int, other: int, path: str, op: Op,
                               value: bytes, look: Op, near: str) -> None:
        """The pattern a cache gets wrong: look, change, look again nearby."""
        parent = path.rsplit("/", 1)[0] or "/"
        seen = {"same": path, "parent": parent,
                "grandparent": parent.rsplit("/", 1)[0] or "/",
                "child": path + "/a", "child_b": path + "/b"}[near]
        self.send(other, look, _p(seen) + b"\0")
        payload = {Op.WRITE: _p(path) + b"\0" + value,
                   Op.SET_PERMS: _p(path) + b"\0" + (b"r1\0" if value else b"n0\0b3\0")
                   }.get(op, _p(path) + b"\0")
        self.send(client, op, payload)
        self.send(other, look, _p(seen) + b"\0")

    @rule(client=st.sampled_from(CLIENTS), path=PATHS,
          op=st.sampled_from([Op.MKDIR, Op.RM]))
    def mkdir_rm(self, client: int, path: str, op: Op) -> None:
        self.send(client, op, _p(path) + b"\0")

    @rule(client=st.sampled_from(CLIENTS), path=PATHS, perms=PERMS)
    def set_perms(self, client: int, path: str, perms: list[bytes]) -> None:
        self.send(client, Op.SET_PERMS, _p(path) + b"\0" + b"".join(p + b"\0" for p in perms))

    @rule(client=st.sampled_from(CLIENTS), path=PATHS, token=TOKENS,
          op=st.sampled_from([Op.WATCH, Op.UNWATCH]))
    def watch(self, client: int, path: str, token: bytes, op: Op) -> None:
        self.send(client, op, _p(path) + b"\0" + token + b"\0")

    @rule(client=st.sampled_from(CLIENTS),
          payload=st.sampled_from([b"0\0", b"7\0", b"x\0", b"", b"3\0\0", b"12ab\0"]))
    def domain_path(self, client: int, payload: bytes) -> None:
        self.send(client, Op.GET_DOMAIN_PATH, payload)

    @rule(client=st.sampled_from(CLIENTS), path=PATHS, off=st.sampled_from([b"0", b"2", b"x"]))
    def directory_part(self, client: int, path: str, off: bytes) -> None:
        self.send(client, Op.DIRECTORY_PART, _p(path) + b"\0" + off + b"\0")

    @rule(client=st.sampled_from(CLIENTS), data=st.data(), watched=PATHS,
          look=st.sampled_from([Op.READ, Op.DIRECTORY, Op.GET_PERMS]))
    def transaction(self, client: int, data: st.DataObject, watched: str, look: Op) -> None:
        """A transaction with a few reads and writes, committed or not, possibly
        conflicting with the other clients' and the guest's changes; another
        client looks at one path before and after."""
        self.send(CLIENTS[0], look, _p(watched) + b"\0")
        start = self.send(client, Op.TRANSACTION_START, b"\0")
        tx = int(start.payload.rstrip(b"\0"))
        for _ in range(data.draw(st.integers(0, 3))):
            kind = data.draw(st.sampled_from(["read", "write", "rm", "dir", "other"]))
            path = data.draw(PATHS)
            if kind == "read":
                self.send(client, Op.READ, _p(path) + b"\0", tx)
            elif kind == "dir":
                self.send(client, Op.DIRECTORY, _p(path) + b"\0", tx)
            elif kind == "write":
                self.send(client, Op.WRITE, _p(path) + b"\0" + data.draw(VALUES), tx)
            elif kind == "rm":
                self.send(client, Op.RM, _p(path) + b"\0", tx)
            else:
                other = data.draw(st.sampled_from(CLIENTS))
                self.send(other, Op.WRITE, _p(data.draw(ABS_PATHS)) + b"\0x")
            if data.draw(st.booleans()):
                self.guest_write(data.draw(ABS_PATHS), b"g")
        end = data.draw(st.sampled_from([b"T\0", b"F\0", b"T\0", b"X\0"]))
        self.send(client, Op.TRANSACTION_END, end, tx)
        self.send(CLIENTS[0], look, _p(watched) + b"\0")

    @rule(client=st.sampled_from(CLIENTS), tx=st.integers(0, 3))
    def stray_tx_id(self, client: int, tx: int) -> None:
        self.send(client, Op.READ, b"/t/a\0", tx)

    @rule(client=st.sampled_from(CLIENTS),
          op=st.sampled_from([Op.WATCH_EVENT, Op.ERROR, 20, 23, 999, Op.RESET_WATCHES,
                              Op.CONTROL, Op.IS_DOMAIN_INTRODUCED]),
          payload=st.binary(max_size=8))
    def odd_request(self, client: int, op: int, payload: bytes) -> None:
        self.send(client, op, payload)

    @rule(client=st.sampled_from(CLIENTS), domid=st.integers(1, 3),
          op=st.sampled_from([Op.INTRODUCE, Op.RELEASE]))
    def domains(self, client: int, domid: int, op: Op) -> None:
        payload = f"{domid}\0" if op == Op.RELEASE else f"{domid}\0{1000 + domid}\0{domid}\0"
        self.send(client, op, payload.encode())

    @rule(path=ABS_PATHS, value=VALUES)
    def guest_write(self, path: str, value: bytes) -> None:
        """A write made elsewhere: the proxy hears of it only by its watch."""
        pkt = Packet(Op.WRITE, 0, 0, _p(path) + b"\0" + value)
        ref_reply, ref_events = _reply(self.ref.handle(GUEST, pkt), GUEST)
        assert ref_reply == _reply(self._sut_handle(GUEST, pkt), GUEST)[0]
        self._route_ref(ref_events)

    @rule(domid=st.integers(1, 3))
    def domain_dies(self, domid: int) -> None:
        """xenstored notices a domain died by itself (VIRQ_DOM_EXC): owners
        drop out of permission lists with no event but @releaseDomain."""
        pkt = Packet(Op.RELEASE, 0, 0, f"{domid}\0".encode())
        ref_reply, ref_events = _reply(self.ref.handle(GUEST, pkt), GUEST)
        assert ref_reply == _reply(self._sut_handle(GUEST, pkt), GUEST)[0]
        self._route_ref(ref_events)

    @rule(path=ABS_PATHS, domid=st.integers(1, 2))
    def permission_outlives_domain(self, path: str, domid: int) -> None:
        """A domain named in a node's permissions dies; once the proxy has the
        @releaseDomain event, GET_PERMS must show it gone."""
        self.send(1, Op.INTRODUCE, f"{domid}\0{1000 + domid}\0{domid}\0".encode())
        self.send(1, Op.WRITE, _p(path) + b"\0v")
        self.send(1, Op.SET_PERMS, _p(path) + f"\0n0\0r{domid}\0".encode())
        self.drain()
        self.send(2, Op.GET_PERMS, _p(path) + b"\0")
        self.domain_dies(domid)
        self.drain()
        self.send(2, Op.GET_PERMS, _p(path) + b"\0")

    @rule(client=st.sampled_from(CLIENTS))
    def reconnect(self, client: int) -> None:
        """The client goes away (its transactions and watches with it, also
        those whose reply it never read) and comes back on a new connection."""
        self.ref.disconnect(client)
        self.ref.connect(client)
        self.awaited.pop(client, None)
        # The reference's events arrive at once; the proxy's still in the FIFO
        # are lost with the connection, as they would be from xenstored.
        got, want = self.sut_events[client], self.ref_events[client]
        assert got == want[:len(got)]
        self.sut_events[client], self.ref_events[client] = [], []
        self._upstream(self.mux.close(self.cid[client]))
        self.cid[client] = self.mux.open()

    # -- invariants -------------------------------------------------------------

    @invariant()
    def same_events_once_read(self) -> None:
        if self.fifo:
            return
        for c in CLIENTS:
            assert self.sut_events[c] == self.ref_events[c]

    @invariant()
    def nothing_left_of_gone_clients(self) -> None:
        """Once the FIFO is drained, xenstored holds the proxy's own watches
        and what the connected clients hold, nothing more."""
        if self.fifo:
            return
        conn = self.sut.conns[PROXY]
        live = {str(i).encode() for i in self.cid.values()}
        for w in conn.watches:
            assert w.token == OWN_TOKEN or w.token.split(b"/")[0] in live
        mine = {t for i in self.cid.values() for t in self.mux.clients[i].tx.values()}
        assert set(conn.transactions) == mine

    @invariant()
    def same_store(self) -> None:
        assert self.sut.tree.nodes == self.ref.tree.nodes

    @invariant()
    def cache_agrees_once_events_are_in(self) -> None:
        if self.fifo:
            return
        for c in CLIENTS:
            for path in ("/t", "/t/a", "/t/a/b", "/t/b", "/local/domain/0/a"):
                for op in (Op.READ, Op.DIRECTORY, Op.GET_PERMS):
                    cached = self.core.cache.get(op, path)
                    if cached is not None:
                        want = self.ref.handle(c, Packet(op, 0, 0, _p(path) + b"\0"))[0][1]
                        assert cached == want, (op, path)
            return


# More examples than the profile's default: each is fast (no I/O), and the
# races this looks for need the right operations to meet on one node.
ProxyEquivalence.TestCase.settings = settings(
    stateful_step_count=50, deadline=None,
    max_examples=max(300, settings.default.max_examples))
TestProxyEquivalence = ProxyEquivalence.TestCase


def test_hits_happen() -> None:
    """The equivalence above would also hold for a proxy that never caches:
    check that repeated reads are in fact answered by the proxy."""
    m = ProxyEquivalence()
    m.write(1, "/t/a", b"v")
    m.drain()
    for _ in range(3):
        m.lookup(2, "/t/a", Op.READ)
        m.lookup(3, "/t", Op.DIRECTORY)
        m.drain()
    assert m.core.stats.hits["READ"] == 2
    assert m.core.stats.hits["DIRECTORY"] == 2
    m.guest_write("/t/a", b"w")
    m.drain()
    assert m.send(1, Op.READ, b"/t/a\0").payload == b"w"


def freshness_case(rounds: int = 50, nodes: tuple[bytes, bytes] = (b"ring-ref", b"state")
                   ) -> int:
    """A writer on xenstored's own socket commits {ring-ref=k, state=k} in one
    transaction, writing ``nodes`` in that order (xenstored fires the commit's
    watches in that order); a reader woken by its watch on ``state`` reads
    ``ring-ref`` through the proxy.  Returns how many reads were older than
    ``state``.  The proxy reads what xenstored sent one packet at a time, and
    the reader acts at the first moment it is woken."""
    store, mux = ModelStore(), Mux(ProxyCore())
    store.connect(PROXY)
    store.connect(GUEST)
    fifo: list[Packet] = []
    to_reader: list[Packet] = []

    def act(out: list[tuple[int, Packet]]) -> None:
        for dest, pkt in out:
            if dest == UPSTREAM:
                fifo.extend(p for to, p in store.handle(PROXY, pkt) if to == PROXY)
            else:
                to_reader.append(pkt)

    def read_one() -> None:
        act(mux.upstream(fifo.pop(0)))

    def call(pkt: Packet) -> Packet:
        before = len(to_reader)
        act(mux.request(reader, pkt))
        while not any(p.op != Op.WATCH_EVENT for p in to_reader[before:]):
            read_one()
        return next(p for p in to_reader[before:] if p.op != Op.WATCH_EVENT)

    def guest(op: Op, payload: bytes, tx: int = 0) -> Packet:
        out = store.handle(GUEST, Packet(op, 0, tx, payload))
        fifo.extend(p for to, p in out if to == PROXY)
        return _reply(out, GUEST)[0]

    act(mux.connected())
    while fifo:
        read_one()
    reader = mux.open()
    call(Packet(Op.WATCH, 1, 0, b"/t/state\0be\0"))
    stale = 0
    for k in range(rounds):
        call(Packet(Op.READ, 2, 0, b"/t/ring-ref\0"))       # cached from round 2 on
        while fifo:
            read_one()
        tx = int(guest(Op.TRANSACTION_START, b"\0").payload.rstrip(b"\0"))
        for node in nodes:
            guest(Op.WRITE, b"/t/" + node + b"\0%d" % k, tx)
        guest(Op.TRANSACTION_END, b"T\0", tx)
        woken = len(to_reader)
        while not any(p.payload == b"/t/state\0be\0" for p in to_reader[woken:]):
            read_one()
        if call(Packet(Op.READ, 3, 0, b"/t/ring-ref\0")).payload != b"%d" % k:
            stale += 1
    return stale


@pytest.mark.parametrize("nodes", [(b"ring-ref", b"state"), (b"state", b"ring-ref")])
def test_freshness_case(nodes: tuple[bytes, bytes]) -> None:
    assert freshness_case(nodes=nodes) == 0


def test_freshness_case_needs_the_barrier() -> None:
    """Mutation check: when the reader's event comes before the proxy's own
    event for ring-ref (state written first), only the barrier after the
    reader's event keeps the read fresh."""
    saved = Mux._event

    def no_barrier(self: Mux, pkt: Packet) -> list[tuple[int, Packet]]:
        out = saved(self, pkt)
        self.barrier_pending = False
        return [(d, p) for d, p in out if d != UPSTREAM]
    Mux._event = no_barrier  # type: ignore[method-assign]
    try:
        assert freshness_case(5, (b"state", b"ring-ref")) > 0
    finally:
        Mux._event = saved  # type: ignore[method-assign]


@contextmanager
def invalidations_missed_for_events() -> Iterator[None]:
    """The proxy as if it read its invalidations late (the design with a
    watch connection of its own): events invalidate nothing."""
    saved = ProxyCore.event

    def count_only(self: ProxyCore, pkt: Packet) -> None:
        self.stats.events += 1
    ProxyCore.event = count_only  # type: ignore[method-assign]
    try:
        yield
    finally:
        ProxyCore.event = saved  # type: ignore[method-assign]


def test_equivalence_sees_a_stale_read() -> None:
    """Mutation check for the machine: the same mutant breaks its contract."""
    m = ProxyEquivalence()
    with invalidations_missed_for_events(), pytest.raises(AssertionError, match="w"):
        m.write(1, "/t/a", b"v")
        m.drain()
        m.lookup(2, "/t/a", Op.READ)
        m.drain()
        m.guest_write("/t/a", b"w")
        m.drain()
        m.lookup(2, "/t/a", Op.READ)
