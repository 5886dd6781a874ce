"""The proxy's decisions, without I/O.

For each request a client sends, ``ProxyCore.request`` says whether to answer
it from the cache (``Answer``) or to send it to xenstored (``Forward``, on the
proxy's one connection: ``xenstore_cache.mux``); ``ProxyCore.reply`` takes
xenstored's reply before it is passed on, and ``ProxyCore.event`` every watch
event xenstored sends.  The asyncio layer (``xenstore_cache.server``) only
moves bytes; everything tested about consistency is here and in the mux.

Consistency rules, in the order they matter:

* Only READ, DIRECTORY, GET_PERMS (outside transactions, on valid paths) and
  GET_DOMAIN_PATH are answered from the cache.  Everything inside a
  transaction goes to xenstored, so its conflict detection sees every access.
* A WRITE, MKDIR, RM or SET_PERMS outside a transaction invalidates its path
  when sent and again when its reply arrives, before the reply is passed on:
  once a client has the acknowledgement, no cached entry older than the
  change exists, and a fill sent before it is refused (``cache.Ticket``).
* Paths changed inside a transaction are remembered (once each, when
  xenstored has accepted the change) and invalidated the same way around a
  committing TRANSACTION_END; the record goes when xenstored's reply shows
  the transaction ended (``transaction_ended``: a malformed TRANSACTION_END
  leaves it open, and ENOMEM may have).
* Every watch event (the proxy's own watch on ``/``, or a client's) invalidates
  its path before any client sees it.  One change of xenstored's (a commit, a
  recursive RM) may fire events for several nodes, a client's before the
  proxy's for another node: the mux then makes no hit until xenstored has
  answered a request sent after the event (``Mux``'s barrier).
* Domains introduced or released may change permission lists in GET_PERMS
  replies with no event (4.22 rewrites them through write_node_raw(), 4.17
  in domain_adjust_node_perms): those entries are dropped, once per domain
  event (on the proxy's own watch's copy of it, not on every client's).
* A path starting with ``@`` is never answered from the cache: xenstored
  refuses it, or (GET_PERMS) takes it as a special node's name.
* A CONTROL request may do anything (even a live update): the cache is flushed.
* While the proxy has no working watch on xenstored the cache is off.

All clients of the socket are dom0 (root, mode 0600) and see every node, so
the cache is shared between them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from xenstore_cache.cache import Cache, Ticket
from xenstore_cache.wire import (DOM0_PATH, MUTATING_OPS, REQUEST_OPS, Op, Packet, canonical_path,
                                 one_arg, split_args)

#: Replies the cache may hold for a path: the answer, or that the node is absent.
CACHED_OPS = frozenset({Op.READ, Op.DIRECTORY, Op.GET_PERMS})
#: Domain operations after which owners in GET_PERMS replies may change.
DOMAIN_OPS = frozenset({Op.INTRODUCE, Op.RELEASE, Op.RESUME, Op.SET_TARGET})
#: Special watch paths the proxy holds besides "/".
SPECIAL_WATCHES = ("@introduceDomain", "@releaseDomain")
#: Token of the proxy's own watches (a client's always start with digits and "/").
OWN_TOKEN = b"xenstore-cache"
#: The one counter key of every request type xenstored does not know (their
#: number is the client's to choose: one key each would grow without bound).
UNKNOWN_OP = "UNKNOWN"

log = logging.getLogger(__name__)


class After(Enum):
    """What a forwarded request does to the cache once its reply is in."""

    NOTHING = 0
    FLUSH_PERMS = 1
    FLUSH = 2


def transaction_ended(reply: Packet) -> bool:
    """Whether xenstored's ``reply`` to a TRANSACTION_END shows that the
    transaction is over.  xenstored ends it whatever the outcome (EAGAIN
    included), but for EINVAL, a malformed request refused before the
    transaction is looked at.  ENOMEM is ambiguous: mostly it comes after
    the end (4.22's do_transaction_end() for a transaction whose allocation
    failed, or a failing commit), but process_message() also sends it when
    it cannot allocate the request's context, before the transaction is
    looked at, which then stays open.  So after ENOMEM the record stays: a
    change committed later must still be invalidated.  When the transaction
    had ended, the record goes with the session or with a second
    TRANSACTION_END (ENOENT), or is replaced when xenstored gives its ID to
    a new transaction."""
    return reply.error_name not in ("EINVAL", "ENOMEM")


@dataclass(frozen=True)
class Answer:
    """Reply to the client now, from the proxy."""

    packet: Packet


@dataclass(frozen=True)
class Forward:
    """Send ``packet`` upstream; handle its reply with ``ProxyCore.reply``."""

    packet: Packet
    ticket: Ticket | None = None
    changes: tuple[str, ...] = ()
    after: After = After.NOTHING


@dataclass
class Session:
    """What the proxy tracks of one client connection."""

    id: int
    #: tx_id -> absolute paths xenstored accepted a change of inside that
    #: transaction so far (each once: no more than xenstored itself holds).
    transactions: dict[int, set[str]] = field(default_factory=dict)


@dataclass
class Stats:
    """Counters reported by ``xenstore-cache stats``."""

    requests: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    local_errors: Counter[str] = field(default_factory=Counter)
    events: int = 0
    invalidations: int = 0
    fills: int = 0
    fills_refused: int = 0
    flushes: int = 0
    perms_flushes: int = 0

    def as_dict(self) -> dict[str, object]:
        total = sum(self.requests.values())
        return {
            "requests": total,
            "hits": sum(self.hits.values()),
            "misses": sum(self.misses.values()),
            "forwarded": sum(self.forwarded.values()),
            "local_errors": sum(self.local_errors.values()),
            "per_op": {op: {"requests": self.requests[op], "hits": self.hits[op],
                            "misses": self.misses[op], "forwarded": self.forwarded[op]}
                       for op in sorted(self.requests)},
            "events": self.events,
            "invalidations": self.invalidations,
            "fills": self.fills,
            "fills_refused": self.fills_refused,
            "flushes": self.flushes,
            "perms_flushes": self.perms_flushes,
        }


def stats_name(op: int) -> str:
    """The counter key of a request type: its name, or ``UNKNOWN_OP``."""
    try:
        return Op(op).name
    except ValueError:
        return UNKNOWN_OP


def absolute_path(raw: bytes, base: str = DOM0_PATH) -> str | None:
    """The absolute path a request argument or event names, valid or not
    (invalidation must not be stricter than xenstored); None for ``@`` names."""
    text = raw.decode("ascii", "replace")
    if text.startswith("@"):
        return None
    if not text.startswith("/"):
        text = f"{base}/{text}"
    # "/a/b/" and "/a//b" are refused by xenstored; invalidating the path
    # without the stray slashes covers whatever it might have touched.
    parts = [p for p in text.split("/") if p]
    return "/" + "/".join(parts)


class ProxyCore:
    def __init__(self, cache: Cache | None = None) -> None:
        self.cache = cache if cache is not None else Cache()
        self.stats = Stats()
        self._next_session = 1

    # -- upstream state ----------------------------------------------------

    def upstream_up(self) -> None:
        """The proxy's watches are registered: changes from now on are seen."""
        self.cache.flush()
        self.cache.enabled = True
        self.stats.flushes += 1

    def upstream_down(self) -> None:
        """No watch on xenstored: nothing cached can be trusted or kept valid."""
        self.cache.enabled = False
        self.cache.flush()
        self.stats.flushes += 1

    def new_session(self) -> Session:
        s = Session(self._next_session)
        self._next_session += 1
        return s

    # -- requests and replies ----------------------------------------------

    def request(self, s: Session, pkt: Packet, may_hit: bool = True) -> Answer | Forward:
        """``may_hit=False``: forward even what the cache holds (the reply
        may still fill it)."""
        name = stats_name(pkt.op)
        self.stats.requests[name] += 1
        if pkt.op not in REQUEST_OPS:
            self.stats.local_errors[name] += 1
            return Answer(pkt.error("ENOSYS"))
        fwd = self._plan(s, pkt, may_hit)
        if isinstance(fwd, Answer):
            self.stats.hits[name] += 1
            return fwd
        if fwd.ticket is not None:
            self.stats.misses[name] += 1
        self.stats.forwarded[name] += 1
        return fwd

    def _plan(self, s: Session, pkt: Packet, may_hit: bool = True) -> Answer | Forward:
        op = pkt.op
        if pkt.tx_id == 0 and (op in CACHED_OPS or op == Op.GET_DOMAIN_PATH):
            return self._lookup(pkt, self._cache_key(pkt), may_hit)
        if op in MUTATING_OPS:
            args = split_args(pkt.payload)
            path = absolute_path(args[0]) if args else None
            if path is None:
                return Forward(pkt)
            if pkt.tx_id == 0:
                self._invalidate(path)
                return Forward(pkt, changes=(path,))
            return Forward(pkt)         # recorded by ``reply`` if xenstored takes it
        if op == Op.TRANSACTION_END:
            # A commit as xenstored's onearg() reads it ("T" and one NUL);
            # anything else is an abort or EINVAL, which changes nothing.
            # The record goes in ``reply``, once the transaction has ended.
            paths = s.transactions.get(pkt.tx_id)
            if one_arg(pkt.payload) == b"T" and paths:
                for p in paths:
                    self._invalidate(p)
                return Forward(pkt, changes=tuple(sorted(paths)))
            return Forward(pkt)
        if op == Op.RESET_WATCHES:
            # xenstored drops the connection's transactions with its watches.
            s.transactions.clear()
            return Forward(pkt)
        if op == Op.CONTROL:
            return Forward(pkt, after=After.FLUSH)
        if op in DOMAIN_OPS:
            return Forward(pkt, after=After.FLUSH_PERMS)
        return Forward(pkt)

    @staticmethod
    def _cache_key(pkt: Packet) -> str | None:
        """The key of a cacheable lookup: the canonical path (GET_DOMAIN_PATH:
        its argument, as the reply depends on nothing else); None when the
        request is malformed and xenstored must answer it."""
        arg = one_arg(pkt.payload)
        if arg is None:
            return None
        if pkt.op == Op.GET_DOMAIN_PATH:
            return arg.decode("latin-1")
        return canonical_path(arg)

    def _lookup(self, pkt: Packet, key: str | None, may_hit: bool = True) -> Answer | Forward:
        if key is None:
            return Forward(pkt)
        hit = self.cache.get(pkt.op, key) if may_hit else None
        if hit is not None:
            return Answer(pkt.reply(hit.op, hit.payload))
        if self.cache.enabled:
            return Forward(pkt, ticket=self.cache.ticket(pkt.op, key))
        return Forward(pkt)

    def reply(self, s: Session, fwd: Forward, reply: Packet) -> None:
        """xenstored answered ``fwd``; update the cache before the client sees it."""
        req = fwd.packet
        for p in fwd.changes:
            self._invalidate(p)
        if fwd.after is After.FLUSH:
            self.cache.flush()
            self.stats.flushes += 1
        elif fwd.after is After.FLUSH_PERMS:
            self.cache.flush_perms()
            self.stats.perms_flushes += 1
        if fwd.ticket is not None and self._cacheable_reply(req, reply):
            if self.cache.fill(fwd.ticket, reply):
                self.stats.fills += 1
            else:
                self.stats.fills_refused += 1
        if req.op == Op.TRANSACTION_START and reply.op == Op.TRANSACTION_START:
            tx = one_arg(reply.payload)
            if tx is not None and tx.isdigit():
                s.transactions[int(tx)] = set()
        elif req.tx_id != 0:
            self._note_transaction(s, req, reply)

    @staticmethod
    def _note_transaction(s: Session, req: Packet, reply: Packet) -> None:
        """Record a change xenstored accepted inside a transaction; forget the
        transaction once xenstored's reply to its end shows it ended."""
        paths = s.transactions.get(req.tx_id)
        if paths is None:
            return
        if req.op in MUTATING_OPS and reply.op == req.op:
            args = split_args(req.payload)
            path = absolute_path(args[0]) if args else None
            if path is not None:
                paths.add(path)
        elif req.op == Op.TRANSACTION_END and transaction_ended(reply):
            del s.transactions[req.tx_id]

    @staticmethod
    def _cacheable_reply(req: Packet, reply: Packet) -> bool:
        if reply.req_id != req.req_id or reply.tx_id != req.tx_id:
            return False
        if reply.op == req.op:
            return True
        # "This node does not exist" is an answer too, for path lookups.
        return req.op in CACHED_OPS and reply.error_name == "ENOENT"

    def session_closed(self, s: Session) -> None:
        """The client went away: xenstored aborts its transactions (nothing to do
        for the cache, whose entries never come from inside a transaction)."""
        s.transactions.clear()

    # -- events --------------------------------------------------------------

    def event(self, pkt: Packet) -> None:
        """A WATCH_EVENT from xenstored."""
        self.stats.events += 1
        args = split_args(pkt.payload)
        if not args:
            return
        if args[0].startswith(b"@"):
            # Still needed on 4.22, where xenstored removes a dead domain from
            # permission lists itself (cdbcfd5d05): domain_tree_remove()
            # rewrites them through write_node_raw(), which fires no watch,
            # and on reading domain_adjust_node_perms() still hides entries
            # naming a domain newer than the node.  (A domain never introduced
            # is removed from permission lists with no event at all: the
            # README's "one gap".)  One domain event reaches
            # the proxy once per watch on it: its own and each watching
            # client's, in one go, its own first (the first registered on the
            # connection; the barrier covers the rest).  One flush, on its own
            # copy: a flush walks the whole cache.
            if len(args) == 2 and args[1] == OWN_TOKEN:
                log.debug("%s: cached permissions dropped", args[0].decode("ascii", "replace"))
                self.cache.flush_perms()
                self.stats.perms_flushes += 1
            return
        path = absolute_path(args[0])
        if path is not None:
            self._invalidate(path)

    def _invalidate(self, path: str) -> None:
        self.stats.invalidations += 1
        self.cache.invalidate(path)
