"""The proxy is transparent: every reply and event through it equals the model's alone.

Two model xenstoreds receive the same operations from the same clients: one
directly (the reference), one behind ``ProxyCore`` (sans-I/O, so Hypothesis
controls every interleaving).  A "guest" also writes to both directly, as
domUs do through their rings; the proxy learns of those writes only through
its own watch, whose events Hypothesis delays.  The contract checked:

* replies and client watch events through the proxy equal the reference's,
  except reads of a path with an undelivered change made elsewhere (the
  bounded staleness the README states);
* once those events are delivered, everything equals the reference again.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from xenstore_cache.core import (SPECIAL_WATCHES, Answer, Forward, ProxyCore, Session,
                                 absolute_path)
from xenstore_cache.model import ModelStore
from xenstore_cache.wire import Op, Packet, is_below

CLIENTS = (1, 2, 3)
SLOW = 4        # a client whose lookups stay in flight while others act
WATCHER = 100   # the proxy's own connection in the model behind it
GUEST = 200     # writes directly, like a domU

# Few nodes, so that operations meet on the same ones often: nested, relative
# (below /local/domain/0) and invalid paths included.
GOOD = ["/t", "/t/a", "/t/a/b", "/t/b", "/t/a/c", "a", "/local/domain/0/a", "a/b"]
BAD = ["/t/", "//t", "/t//a", "", "/t/a b", "/t/\u00e9", "/"]
ABS_PATHS = st.sampled_from([p for p in GOOD if p.startswith("/t/")])
PATHS = st.sampled_from(GOOD * 4 + BAD)
VALUES = st.binary(max_size=12) | st.sampled_from([b"", b"\0", b"\xff\0x"])
TOKENS = st.sampled_from([b"t1", b"t2"])
PERMS = st.lists(st.sampled_from([b"n0", b"r1", b"w2", b"b0", b"x1", b"r", b"r70000"]),
                 min_size=0, max_size=3)


def _p(path: str) -> bytes:
    return path.encode()


class ProxyEquivalence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ref = ModelStore()
        self.sut = ModelStore()
        self.core = ProxyCore()
        self.sessions: dict[int, Session] = {}
        self.ref_events: dict[int, list[Packet]] = {c: [] for c in CLIENTS}
        self.sut_events: dict[int, list[Packet]] = {c: [] for c in CLIENTS}
        #: the proxy's own watch events not yet delivered, and whether each is
        #: for a change made elsewhere (only those may leave reads stale)
        self.undelivered: list[tuple[Packet, bool]] = []
        self.req_id = 0
        #: SLOW's lookup: the request, what the proxy decided, xenstored's reply
        #: (given when it was sent) and the reference's.
        self.inflight: tuple[Packet, Forward, Packet, Packet] | None = None
        for c in (*CLIENTS, SLOW):
            self.ref.connect(c)
            self.sut.connect(c)
            self.sessions[c] = self.core.new_session()
        for m in (self.ref, self.sut):
            m.connect(GUEST)
        self.sut.connect(WATCHER)
        for path in ["/", *SPECIAL_WATCHES]:
            out = self.sut.handle(WATCHER, Packet(Op.WATCH, 1, 0, _p(path) + b"\0tok\0"))
            assert out[0][1].op == Op.WATCH
            for _, ev in out[1:]:
                self.core.event(ev)
        self.core.upstream_up()

    # -- plumbing ---------------------------------------------------------------

    def _route(self, out: list[tuple[int, Packet]], events: dict[int, list[Packet]],
               via_proxy: bool, elsewhere: bool = False) -> None:
        for to, pkt in out:
            assert pkt.op == Op.WATCH_EVENT
            if to == WATCHER:
                self.undelivered.append((pkt, elsewhere))
            elif to in CLIENTS:
                if via_proxy:
                    self.core.event(pkt)   # the client's upstream reader sees it first
                events[to].append(pkt)

    def _stale_possible(self, pkt: Packet) -> bool:
        if pkt.op not in (Op.READ, Op.DIRECTORY, Op.GET_PERMS) or pkt.tx_id != 0:
            return False
        arg = pkt.payload.rstrip(b"\0")
        path = absolute_path(arg)
        if path is None:
            return False
        for ev, elsewhere in self.undelivered:
            if not elsewhere:
                continue
            raw = ev.payload.split(b"\0")[0]
            if raw.startswith(b"@"):
                if pkt.op == Op.GET_PERMS:
                    return True
                continue
            changed = absolute_path(raw)
            if changed is not None and (is_below(path, changed) or is_below(changed, path)):
                return True
        return False

    def send(self, client: int, op: int, payload: bytes, tx_id: int = 0) -> Packet:
        self.req_id += 1
        pkt = Packet(op, self.req_id, tx_id, payload)
        stale_ok = self._stale_possible(pkt)
        ref_out = self.ref.handle(client, pkt)
        ref_reply = ref_out[0][1]
        self._route(ref_out[1:], self.ref_events, via_proxy=False)

        decision = self.core.request(self.sessions[client], pkt)
        if isinstance(decision, Answer):
            sut_reply = decision.packet
        else:
            sut_out = self.sut.handle(client, decision.packet)
            sut_reply = sut_out[0][1]
            self.core.reply(self.sessions[client], decision, sut_reply)
            self._route(sut_out[1:], self.sut_events, via_proxy=True)
        if not stale_ok:
            assert sut_reply == ref_reply, (pkt, ref_reply, sut_reply)
        else:
            assert (sut_reply.op, sut_reply.req_id) in ((ref_reply.op, ref_reply.req_id),
                                                        (Op.ERROR, ref_reply.req_id),
                                                        (pkt.op, ref_reply.req_id))
        return ref_reply

    # -- rules ------------------------------------------------------------------

    @rule(client=st.sampled_from(CLIENTS), path=PATHS,
          op=st.sampled_from([Op.READ, Op.DIRECTORY, Op.GET_PERMS, Op.READ]))
    def lookup(self, client: int, path: str, op: Op) -> None:
        self.send(client, op, _p(path) + b"\0")

    @precondition(lambda self: self.inflight is None)
    @rule(path=ABS_PATHS, op=st.sampled_from([Op.READ, Op.DIRECTORY, Op.GET_PERMS]))
    def slow_lookup_start(self, path: str, op: Op) -> None:
        """A lookup xenstored has answered but whose reply the proxy has not
        read yet: changes made meanwhile must keep it out of the cache."""
        self.req_id += 1
        pkt = Packet(op, self.req_id, 0, _p(path) + b"\0")
        ref_reply = self.ref.handle(SLOW, pkt)[0][1]
        decision = self.core.request(self.sessions[SLOW], pkt)
        if isinstance(decision, Answer):
            assert decision.packet == ref_reply or self._stale_possible(pkt)
            return
        sut_reply = self.sut.handle(SLOW, pkt)[0][1]
        assert sut_reply == ref_reply
        self.inflight = (pkt, decision, sut_reply, ref_reply)

    @precondition(lambda self: self.inflight is not None)
    @rule()
    def slow_lookup_end(self) -> None:
        assert self.inflight is not None
        pkt, decision, sut_reply, _ = self.inflight
        self.core.reply(self.sessions[SLOW], decision, sut_reply)
        self.inflight = None

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
        ref_out = self.ref.handle(GUEST, pkt)
        sut_out = self.sut.handle(GUEST, pkt)
        assert ref_out[0][1] == sut_out[0][1]
        self._route(ref_out[1:], self.ref_events, via_proxy=False)
        self._route(sut_out[1:], self.sut_events, via_proxy=True, elsewhere=True)

    @rule(domid=st.integers(1, 3))
    def domain_dies(self, domid: int) -> None:
        """xenstored notices a domain died by itself (VIRQ_DOM_EXC): owners
        drop out of permission lists with no event but @releaseDomain."""
        pkt = Packet(Op.RELEASE, 0, 0, f"{domid}\0".encode())
        ref_out = self.ref.handle(GUEST, pkt)
        sut_out = self.sut.handle(GUEST, pkt)
        assert ref_out[0][1] == sut_out[0][1]
        self._route(ref_out[1:], self.ref_events, via_proxy=False)
        self._route(sut_out[1:], self.sut_events, via_proxy=True, elsewhere=True)

    @rule(path=ABS_PATHS, domid=st.integers(1, 2))
    def permission_outlives_domain(self, path: str, domid: int) -> None:
        """A domain named in a node's permissions dies; once the proxy has the
        @releaseDomain event, GET_PERMS must show it gone."""
        self.send(1, Op.INTRODUCE, f"{domid}\0{1000 + domid}\0{domid}\0".encode())
        self.send(1, Op.WRITE, _p(path) + b"\0v")
        self.send(1, Op.SET_PERMS, _p(path) + f"\0n0\0r{domid}\0".encode())
        self.deliver_events(len(self.undelivered))
        self.send(2, Op.GET_PERMS, _p(path) + b"\0")
        self.domain_dies(domid)
        self.deliver_events(len(self.undelivered))
        self.send(2, Op.GET_PERMS, _p(path) + b"\0")

    @precondition(lambda self: bool(self.undelivered))
    @rule(n=st.integers(1, 4))
    def deliver_events(self, n: int) -> None:
        for pkt, _ in self.undelivered[:n]:
            self.core.event(pkt)
        del self.undelivered[:n]

    # -- invariants -------------------------------------------------------------

    @invariant()
    def same_events(self) -> None:
        for c in CLIENTS:
            assert self.sut_events[c] == self.ref_events[c]

    @invariant()
    def same_store(self) -> None:
        assert self.sut.tree.nodes == self.ref.tree.nodes

    @invariant()
    def cache_agrees_once_events_are_in(self) -> None:
        if self.undelivered:
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
    for _ in range(3):
        m.lookup(2, "/t/a", Op.READ)
        m.lookup(3, "/t", Op.DIRECTORY)
    assert m.core.stats.hits["READ"] == 2
    assert m.core.stats.hits["DIRECTORY"] == 2
    m.guest_write("/t/a", b"w")
    m.deliver_events(10)
    assert m.send(1, Op.READ, b"/t/a\0").payload == b"w"
