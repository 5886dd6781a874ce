"""The cache proper: replies by (operation, path), invalidated by subtree.

Entries live in a trie of path components so that a change at a path drops,
in time proportional to what is dropped, the entries of that path, of every
node below it (an RM removes them) and of every node above it (a write can
create parents implicitly and changes the parent's DIRECTORY listing).

A miss is filled from the reply xenstored gives it.  Between sending that
request and receiving the reply another change may have been made and its
invalidation already applied; inserting the reply then would put back a
value older than that change.  Each fill therefore carries the invalidation
sequence number at which it was sent (a ``Ticket``), and ``fill`` refuses the
reply when any invalidation overlapping its path came later.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from xenstore_cache.wire import Op, Packet, is_below

#: Default bound on cached entries; past it the cache is flushed (counted).
DEFAULT_MAX_ENTRIES = 65536
#: How many recent invalidations a fill can be checked against.
LOG_LENGTH = 4096


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    entries: dict[int, Packet] = field(default_factory=dict)


@dataclass(frozen=True)
class Ticket:
    """A fill in flight: what it is for and when it was sent."""

    op: int
    key: str
    seq: int


class Cache:
    """Replies keyed by (op, canonical path); GET_DOMAIN_PATH by its argument."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._root = _Node()
        self._domain_paths: dict[str, Packet] = {}
        self._count = 0
        self._seq = 0
        self._log: deque[tuple[int, str]] = deque(maxlen=LOG_LENGTH)
        self._flush_seq = 0
        self._perms_flush_seq = 0
        self.enabled = False
        self.overflows = 0

    def __len__(self) -> int:
        return self._count + len(self._domain_paths)

    # -- lookups and fills -------------------------------------------------

    def get(self, op: int, key: str) -> Packet | None:
        if not self.enabled:
            return None
        if op == Op.GET_DOMAIN_PATH:
            return self._domain_paths.get(key)
        node = self._find(key)
        return None if node is None else node.entries.get(op)

    def ticket(self, op: int, key: str) -> Ticket:
        return Ticket(op, key, self._seq)

    def fill(self, ticket: Ticket, reply: Packet) -> bool:
        """Store ``reply`` (req_id/tx_id zeroed) unless a later change overlaps."""
        if not self.enabled or not self._fresh(ticket):
            return False
        stored = Packet(reply.op, 0, 0, reply.payload)
        if ticket.op == Op.GET_DOMAIN_PATH:
            if len(self._domain_paths) >= self.max_entries:
                self._domain_paths.clear()
                self.overflows += 1
            self._domain_paths[ticket.key] = stored
            return True
        if self._count >= self.max_entries:
            self._clear_tree()
            self.overflows += 1
        node = self._root
        for part in _parts(ticket.key):
            node = node.children.setdefault(part, _Node())
        if ticket.op not in node.entries:
            self._count += 1
        node.entries[ticket.op] = stored
        return True

    def _fresh(self, ticket: Ticket) -> bool:
        if ticket.seq < self._flush_seq:
            return False
        if ticket.op == Op.GET_PERMS and ticket.seq < self._perms_flush_seq:
            return False
        if ticket.op == Op.GET_DOMAIN_PATH:
            return True
        if self._log and self._log[0][0] > ticket.seq + 1 and len(self._log) == LOG_LENGTH:
            return False  # older than what the log remembers: cannot prove it fresh
        for seq, path in reversed(self._log):
            if seq <= ticket.seq:
                break
            if is_below(ticket.key, path) or is_below(path, ticket.key):
                return False
        return True

    # -- invalidation ------------------------------------------------------

    def invalidate(self, path: str) -> None:
        """``path`` changed (value, perms, existence): drop it, below and above."""
        self._seq += 1
        self._log.append((self._seq, path))
        parts = _parts(path)
        if not parts:
            self._clear_tree()
            return
        node: _Node | None = self._root
        for part in parts[:-1]:
            assert node is not None
            self._drop_entries(node)
            node = node.children.get(part)
            if node is None:
                return
        assert node is not None
        self._drop_entries(node)
        target = node.children.pop(parts[-1], None)
        if target is not None:
            self._count -= _count_entries(target)

    def flush_perms(self) -> None:
        """Domains came or went: owners in GET_PERMS replies may change without
        an event (xenstored's domain_adjust_node_perms), so drop them all."""
        self._seq += 1
        self._perms_flush_seq = self._seq
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node.entries.pop(Op.GET_PERMS, None) is not None:
                self._count -= 1
            stack.extend(node.children.values())

    def flush(self) -> None:
        """Drop everything, and every fill in flight."""
        self._seq += 1
        self._flush_seq = self._seq
        self._clear_tree()
        self._domain_paths.clear()

    def _clear_tree(self) -> None:
        self._root = _Node()
        self._count = 0

    def _drop_entries(self, node: _Node) -> None:
        self._count -= len(node.entries)
        node.entries.clear()

    def _find(self, path: str) -> _Node | None:
        node = self._root
        for part in _parts(path):
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _count_entries(node: _Node) -> int:
    total = 0
    stack = [node]
    while stack:
        n = stack.pop()
        total += len(n.entries)
        stack.extend(n.children.values())
    return total
