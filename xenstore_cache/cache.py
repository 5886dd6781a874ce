"""The cache proper: replies by (operation, path), invalidated by subtree.

Entries live in a trie of path components so that a change at a path drops,
in time proportional to what is dropped, the entries of that path, of every
node below it (an RM removes them) and of every node above it (a write can
create parents implicitly and changes the parent's DIRECTORY listing).  A
trie node left with neither entries nor children is removed at once, so
every leaf holds an entry.

A miss is filled from the reply xenstored gives it.  Between sending that
request and receiving the reply another change may have been made and its
invalidation already applied; inserting the reply then would put back a
value older than that change.  Each fill therefore carries the invalidation
sequence number at which it was sent (a ``Ticket``), and ``fill`` refuses the
reply when any invalidation overlapping its path came later.

**Bounds.**  The cache holds at most ``max_entries`` entries and at most
``max_bytes`` bytes by its own estimate (``size``): each trie node counts
``NODE_COST`` plus its name, each entry ``ENTRY_COST`` plus its payload (and,
for GET_DOMAIN_PATH, its key).  One path may need a thousand nodes, so a
bound on entries alone bounds nothing.  Eviction is all or nothing: a fill
that would pass either bound empties the cache first (``overflows`` counts
it); a fill that would not fit even then is not stored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from xenstore_cache.wire import Op, Packet, is_below

#: Default bound on cached entries; past it the cache is emptied (counted).
DEFAULT_MAX_ENTRIES = 65536
#: Default bound on the cache's estimated size in bytes; past it, the same.
DEFAULT_MAX_BYTES = 64 << 20
#: Estimated bytes of one trie node besides its name: the node and its two
#: dicts, its slot in its parent's dict, the name's str header (CPython 3.11,
#: measured with tracemalloc: about 380).
NODE_COST = 384
#: Estimated bytes of one entry besides its payload: the Packet, the bytes
#: header, its share of the entries dict (measured: 100 to 200).
ENTRY_COST = 192
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

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._root = _Node()
        self._domain_paths: dict[str, Packet] = {}
        self._count = 0             # entries in the trie
        self._nodes = 0             # trie nodes, the root not counted
        self._tree_size = 0         # estimated bytes of the trie
        self._domain_size = 0       # estimated bytes of the GET_DOMAIN_PATH entries
        self._seq = 0
        self._log: deque[tuple[int, str]] = deque(maxlen=LOG_LENGTH)
        self._flush_seq = 0
        self._perms_flush_seq = 0
        self.enabled = False
        self.overflows = 0

    def __len__(self) -> int:
        return self._count + len(self._domain_paths)

    @property
    def size(self) -> int:
        """Estimated bytes held (what ``max_bytes`` bounds)."""
        return self._tree_size + self._domain_size

    @property
    def nodes(self) -> int:
        """Trie nodes held, the root not counted."""
        return self._nodes

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
        """Store ``reply`` (req_id/tx_id zeroed) unless a later change overlaps
        or it does not fit even in an empty cache."""
        if not self.enabled or not self._fresh(ticket):
            return False
        stored = Packet(reply.op, 0, 0, reply.payload)
        if ticket.op == Op.GET_DOMAIN_PATH:
            return self._fill_domain_path(ticket.key, stored)
        return self._fill_tree(_parts(ticket.key), ticket.op, stored)

    def _fill_domain_path(self, key: str, stored: Packet) -> bool:
        def cost() -> tuple[int, int]:
            old = self._domain_paths.get(key)
            if old is None:
                return _entry_cost(stored) + len(key), 1
            return _entry_cost(stored) - _entry_cost(old), 0
        added = self._make_room(cost)
        if added is None:
            return False
        self._domain_paths[key] = stored
        self._domain_size += added
        return True

    def _fill_tree(self, parts: list[str], op: int, stored: Packet) -> bool:
        def cost() -> tuple[int, int]:
            node: _Node | None = self._root
            total = 0
            for part in parts:
                node = node.children.get(part) if node is not None else None
                if node is None:
                    total += NODE_COST + len(part)
            old = node.entries.get(op) if node is not None else None
            if old is None:
                return total + _entry_cost(stored), 1
            return total + _entry_cost(stored) - _entry_cost(old), 0
        added = self._make_room(cost)
        if added is None:
            return False
        node = self._root
        for part in parts:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node()
                self._nodes += 1
            node = child
        if op not in node.entries:
            self._count += 1
        node.entries[op] = stored
        self._tree_size += added
        return True

    def _make_room(self, cost: Callable[[], tuple[int, int]]) -> int | None:
        """The bytes a fill adds (``cost()``: bytes and entries it adds), once
        they fit, emptying the cache first if they do not; None if they do
        not fit an empty cache either."""
        size, entries = cost()
        if self.size + size <= self.max_bytes and len(self) + entries <= self.max_entries:
            return size
        self._clear_tree()
        self._clear_domain_paths()
        self.overflows += 1
        size, entries = cost()
        if size <= self.max_bytes and entries <= self.max_entries:
            return size
        return None

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
        """``path`` changed (value, perms, existence): drop it, below and above,
        and the nodes this leaves empty."""
        self._seq += 1
        self._log.append((self._seq, path))
        parts = _parts(path)
        if not parts:
            self._clear_tree()
            return
        trail: list[tuple[_Node, str]] = []      # (parent, child's name) down the path
        node = self._root
        for part in parts[:-1]:
            self._drop_entries(node)
            child = node.children.get(part)
            if child is None:
                break
            trail.append((node, part))
            node = child
        else:
            self._drop_entries(node)
            target = node.children.pop(parts[-1], None)
            if target is not None:
                self._forget(parts[-1], target)
        self._prune(trail)

    def flush_perms(self) -> None:
        """Domains came or went: permission lists in GET_PERMS replies may
        change without an event (4.22's domain_tree_remove() rewrites them
        through write_node_raw(); 4.17's domain_adjust_node_perms), so drop
        them all, and the nodes that held nothing else.  A walk of the whole
        trie: the core does it once per domain event."""
        self._seq += 1
        self._perms_flush_seq = self._seq
        inner: list[_Node] = []     # nodes with children, parents before children
        dropped = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            old = node.entries.pop(Op.GET_PERMS, None)
            if old is not None:
                dropped += 1
                self._tree_size -= _entry_cost(old)
            if node.children:
                inner.append(node)
                stack.extend(node.children.values())
        self._count -= dropped
        if not dropped:
            return
        for node in reversed(inner):    # a node's children are pruned before it is looked at
            empty = [n for n, ch in node.children.items() if not ch.children and not ch.entries]
            for name in empty:
                del node.children[name]
                self._node_gone(name)

    def flush(self) -> None:
        """Drop everything, and every fill in flight."""
        self._seq += 1
        self._flush_seq = self._seq
        self._clear_tree()
        self._clear_domain_paths()

    def _clear_tree(self) -> None:
        self._root = _Node()
        self._count = 0
        self._nodes = 0
        self._tree_size = 0

    def _clear_domain_paths(self) -> None:
        self._domain_paths.clear()
        self._domain_size = 0

    def _drop_entries(self, node: _Node) -> None:
        self._count -= len(node.entries)
        self._tree_size -= sum(map(_entry_cost, node.entries.values()))
        node.entries.clear()

    def _forget(self, name: str, top: _Node) -> None:
        """Account for the subtree ``top`` (named ``name``), removed."""
        stack = [(name, top)]
        while stack:
            name, node = stack.pop()
            self._node_gone(name)
            self._drop_entries(node)
            stack.extend(node.children.items())

    def _prune(self, trail: list[tuple[_Node, str]]) -> None:
        """Remove the nodes at the end of ``trail`` left with nothing, deepest first."""
        for parent, name in reversed(trail):
            node = parent.children[name]
            if node.children or node.entries:
                return
            del parent.children[name]
            self._node_gone(name)

    def _node_gone(self, name: str) -> None:
        """Account for one trie node named ``name``, removed."""
        self._nodes -= 1
        self._tree_size -= NODE_COST + len(name)

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


def _entry_cost(pkt: Packet) -> int:
    return ENTRY_COST + len(pkt.payload)
