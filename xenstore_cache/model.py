"""A model xenstored: the protocol's semantics in a few hundred lines, no I/O.

Used as the reference the proxy is tested against (tests/unit/xscache) and,
through ``xenstore_cache.model_server``, as a stand-in xenstored on a Unix
socket.  It follows C xenstored of Xen 4.17 where the proxy could observe a
difference:

* nodes hold bytes and a permission list; WRITE and MKDIR create missing
  parents, which inherit their parent's permissions; RM removes a subtree and
  succeeds on an absent node whose parent exists; "/" cannot be removed;
* DIRECTORY lists children in creation order; DIRECTORY_PART pages them with
  the node's generation first;
* watches fire once on registration, then for every change at or below their
  path (for an RM: the removed node, and each node below it exactly); a
  relative watch gets relative event paths; ``@introduceDomain`` and
  ``@releaseDomain`` fire on INTRODUCE and RELEASE;
* a transaction works on a snapshot and fails with EAGAIN at commit when a
  node it read or changed has changed since it started (xenstored >= 4.9);
* every connection is a socket connection, i.e. dom0, privileged: permissions
  are stored and validated but never deny;
* a path argument starting with ``@`` is refused (EINVAL) but by GET_PERMS
  and SET_PERMS, which take it as a special node's name (xenstored's
  ``canonicalize()`` with ``allow_special``): ``@introduceDomain`` and
  ``@releaseDomain`` exist, with permissions, and nothing else starting with
  ``@`` (ENOENT); WATCH and UNWATCH take any such name;
* on the requesting connection a change's watch events come before its
  reply, as xenstored 4.22 sends them (``fire_watches()``, then
  ``send_ack()``); a WATCH's own first event comes after its reply.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from xenstore_cache.wire import (DOM0_PATH, MAX_PAYLOAD, NO_TX_OPS, REQUEST_OPS, Op, Packet,
                                 canonical_path, is_below, is_valid_special, one_arg,
                                 split_args)

_PERM_LETTERS = frozenset(b"nrwb")
OK = b"OK\0"
#: xenstored's special nodes, in its data base beside "/" (GET_PERMS and
#: SET_PERMS reach them; their permissions say who gets their events).
SPECIAL_NODES = ("@introduceDomain", "@releaseDomain")


class _Err(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass
class _Node:
    value: bytes = b""
    perms: list[bytes] = field(default_factory=lambda: [b"n0"])
    children: list[str] = field(default_factory=list)
    generation: int = 0


@dataclass
class _Tree:
    nodes: dict[str, _Node]
    #: path -> version, bumped whenever the node or its child list changes
    #: (absent paths included), for transaction conflict detection.
    versions: dict[str, int]
    generation: int = 0

    def bump(self, path: str) -> None:
        self.versions[path] = self.versions.get(path, 0) + 1


@dataclass
class _Watch:
    path: bytes        # as registered (may be relative or special)
    canonical: str     # absolute path, or the special name
    token: bytes
    relative: bool
    depth: int = -1    # levels below the path that fire it (4.21 and later); -1: all


@dataclass
class _Transaction:
    tree: _Tree
    start_versions: dict[str, int]
    #: Paths in the order the transaction first touched them (its commit
    #: fires watches in that order, as xenstored's finalize_transaction does).
    accessed: dict[str, None] = field(default_factory=dict)
    changed: list[tuple[str, bool]] = field(default_factory=list)  # (path, exact)


@dataclass
class _Conn:
    watches: list[_Watch] = field(default_factory=list)
    transactions: dict[int, _Transaction] = field(default_factory=dict)
    next_tx: int = 1


class ModelStore:
    """``handle(conn, packet)`` returns the messages to send, as (conn, packet)."""

    def __init__(self) -> None:
        root = _Node()
        self.tree = _Tree({"/": root}, {})
        self.conns: dict[int, _Conn] = {}
        self.introduced: set[int] = {0}
        for path in ("/local", "/local/domain", DOM0_PATH, "/tool"):
            self._create(self.tree, path)
        for name in SPECIAL_NODES:           # no parent, no child list entry
            self.tree.nodes[name] = _Node()

    # -- connections --------------------------------------------------------

    def connect(self, conn: int) -> None:
        if conn in self.conns:
            raise ValueError(f"connection {conn} exists")
        self.conns[conn] = _Conn()

    def disconnect(self, conn: int) -> None:
        """The client went away: its watches and transactions go with it."""
        self.conns.pop(conn, None)

    # -- dispatch -----------------------------------------------------------

    def handle(self, conn: int, pkt: Packet) -> list[tuple[int, Packet]]:
        c = self.conns[conn]
        out: list[tuple[int, Packet]] = []
        try:
            if pkt.op not in REQUEST_OPS:
                raise _Err("ENOSYS")
            tx: _Transaction | None = None
            if pkt.op not in NO_TX_OPS and pkt.tx_id != 0:
                tx = c.transactions.get(pkt.tx_id)
                if tx is None:
                    raise _Err("ENOENT")
            payload, events = self._dispatch(conn, c, tx, pkt)
            reply = pkt.reply(pkt.op, payload)
            if len(reply.payload) > MAX_PAYLOAD:
                raise _Err("E2BIG")
            # xenstored queues a change's events (fire_watches) before its
            # reply (send_ack); only do_watch acknowledges first.
            if pkt.op == Op.WATCH:
                out = [(conn, reply), *events]
            else:
                out = [*events, (conn, reply)]
        except _Err as err:
            out.append((conn, pkt.error(err.name)))
        return out

    def _dispatch(self, conn: int, c: _Conn, tx: _Transaction | None,
                  pkt: Packet) -> tuple[bytes, list[tuple[int, Packet]]]:
        op = pkt.op
        tree = tx.tree if tx is not None else self.tree
        if op == Op.READ:
            path = self._path_arg(pkt)
            return self._get(tree, tx, path).value, []
        if op == Op.DIRECTORY:
            path = self._path_arg(pkt)
            return b"".join(ch.encode() + b"\0" for ch in self._get(tree, tx, path).children), []
        if op == Op.DIRECTORY_PART:
            return self._directory_part(tree, tx, pkt), []
        if op == Op.GET_PERMS:
            path = self._path_arg(pkt, special=True)
            return b"".join(p + b"\0" for p in self._get(tree, tx, path).perms), []
        if op == Op.WRITE:
            head, sep, value = pkt.payload.partition(b"\0")
            if not sep:
                raise _Err("EINVAL")
            path = self._valid(head)
            changed = self._write(tree, tx, path, value)
            return OK, self._changed(conn, tx, changed)
        if op == Op.MKDIR:
            path = self._path_arg(pkt)
            if path in tree.nodes:
                self._access(tx, path)
                return OK, []
            changed = self._write(tree, tx, path, None)
            return OK, self._changed(conn, tx, changed)
        if op == Op.RM:
            return OK, self._rm(conn, tree, tx, self._path_arg(pkt))
        if op == Op.SET_PERMS:
            return OK, self._set_perms(conn, tree, tx, pkt)
        if op == Op.WATCH:
            return OK, self._watch(conn, c, pkt)
        if op == Op.UNWATCH:
            args = split_args(pkt.payload)
            if len(args) != 2:
                raise _Err("EINVAL")
            for w in c.watches:
                if w.path == args[0] and w.token == args[1]:
                    c.watches.remove(w)
                    return OK, []
            raise _Err("ENOENT")
        if op == Op.TRANSACTION_START:
            if tx is not None:
                raise _Err("EBUSY")
            tx_id = c.next_tx
            c.next_tx += 1
            c.transactions[tx_id] = _Transaction(copy.deepcopy(self.tree),
                                                 dict(self.tree.versions))
            return str(tx_id).encode() + b"\0", []
        if op == Op.TRANSACTION_END:
            return OK, self._end(conn, c, pkt)
        if op == Op.GET_DOMAIN_PATH:
            arg = one_arg(pkt.payload)
            if arg is None:
                raise _Err("EINVAL")
            return f"/local/domain/{_atoi(arg)}".encode() + b"\0", []
        if op == Op.INTRODUCE:
            args = split_args(pkt.payload)
            if len(args) != 3 or not all(a.isdigit() for a in args):
                raise _Err("EINVAL")
            self.introduced.add(int(args[0]))
            return OK, self._fire("@introduceDomain", exact=True)
        if op == Op.RELEASE:
            domid = self._domid_arg(pkt)
            if domid not in self.introduced or domid == 0:
                raise _Err("ENOENT")
            self.introduced.discard(domid)
            self._forget_domain(domid)
            return OK, self._fire("@releaseDomain", exact=True)
        if op == Op.IS_DOMAIN_INTRODUCED:
            return (b"T\0" if self._domid_arg(pkt) in self.introduced else b"F\0"), []
        if op == Op.RESUME:
            if self._domid_arg(pkt) not in self.introduced:
                raise _Err("ENOENT")
            return OK, []
        if op == Op.SET_TARGET:
            args = split_args(pkt.payload)
            if len(args) != 2 or not all(a.isdigit() for a in args):
                raise _Err("EINVAL")
            return OK, []
        if op == Op.RESET_WATCHES:
            c.watches.clear()
            c.transactions.clear()
            return OK, []
        if op == Op.CONTROL:
            args = split_args(pkt.payload)
            if args and args[0] == b"print":
                return OK, []
            raise _Err("EINVAL")
        raise _Err("ENOSYS")

    def _forget_domain(self, domid: int) -> None:
        """A domain is gone: it drops out of every permission list but as owner
        (xenstored's domain_adjust_node_perms, applied lazily and without a
        watch event, so a new domain with its domid inherits nothing)."""
        mine = str(domid).encode()
        for node in self.tree.nodes.values():
            node.perms = node.perms[:1] + [p for p in node.perms[1:] if p[1:] != mine]

    # -- nodes ----------------------------------------------------------------

    @staticmethod
    def _valid(raw: bytes, special: bool = False) -> str:
        """xenstored's ``canonicalize()``; ``special``: a name starting with
        ``@`` is taken as it is (GET_PERMS, SET_PERMS)."""
        if special and raw.startswith(b"@"):
            name = raw.decode("ascii", "replace")
            if not is_valid_special(name):
                raise _Err("EINVAL")
            return name
        path = canonical_path(raw)
        if path is None:
            raise _Err("EINVAL")
        return path

    def _path_arg(self, pkt: Packet, special: bool = False) -> str:
        arg = one_arg(pkt.payload)
        if arg is None:
            raise _Err("EINVAL")
        return self._valid(arg, special)

    @staticmethod
    def _domid_arg(pkt: Packet) -> int:
        arg = one_arg(pkt.payload)
        if arg is None or not arg.isdigit():
            raise _Err("EINVAL")
        return int(arg)

    @staticmethod
    def _access(tx: _Transaction | None, path: str) -> None:
        if tx is not None:
            tx.accessed.setdefault(path)

    def _get(self, tree: _Tree, tx: _Transaction | None, path: str) -> _Node:
        self._access(tx, path)
        node = tree.nodes.get(path)
        if node is None:
            raise _Err("ENOENT")
        return node

    def _create(self, tree: _Tree, path: str) -> list[str]:
        """Create ``path`` and missing parents; returns the paths created."""
        created: list[str] = []
        missing = []
        p = path
        while p not in tree.nodes:
            missing.append(p)
            p = p.rsplit("/", 1)[0] or "/"
        for p in reversed(missing):
            parent_path = p.rsplit("/", 1)[0] or "/"
            parent = tree.nodes[parent_path]
            tree.generation += 1
            tree.nodes[p] = _Node(perms=list(parent.perms), generation=tree.generation)
            parent.children.append(p.rsplit("/", 1)[1])
            tree.bump(parent_path)
            tree.bump(p)
            created.append(p)
        return created

    def _write(self, tree: _Tree, tx: _Transaction | None, path: str,
               value: bytes | None) -> str:
        created = self._create(tree, path)
        node = tree.nodes[path]
        if value is not None:
            node.value = value
            tree.bump(path)
        if tx is not None:
            tx.accessed.setdefault(path)
            for p in created:
                tx.accessed.setdefault(p.rsplit("/", 1)[0] or "/")
        return path

    def _rm(self, conn: int, tree: _Tree, tx: _Transaction | None,
            path: str) -> list[tuple[int, Packet]]:
        self._access(tx, path)
        if path not in tree.nodes:
            parent = path.rsplit("/", 1)[0] or "/"
            self._access(tx, parent)
            if parent in tree.nodes:
                return []
            raise _Err("ENOENT")
        if path == "/":
            raise _Err("EINVAL")
        removed = sorted(p for p in tree.nodes if is_below(p, path))
        parent_path, name = path.rsplit("/", 1)
        parent_path = parent_path or "/"
        tree.nodes[parent_path].children.remove(name)
        tree.bump(parent_path)
        for p in removed:
            del tree.nodes[p]
            tree.bump(p)
        if tx is not None:
            tx.accessed.setdefault(parent_path)
            for p in removed:
                tx.accessed.setdefault(p)
            tx.changed.append((path, False))
            tx.changed.extend((p, True) for p in removed if p != path)
            return []
        # As xenstored: the removed children's exact watches first, deepest
        # first, then the subtree's event for the removed node.
        events: list[tuple[int, Packet]] = []
        for p in sorted(removed, key=lambda q: (-q.count("/"), q)):
            if p != path:
                events += self._fire(p, exact=True)
        return events + self._fire(path, exact=False)

    def _set_perms(self, conn: int, tree: _Tree, tx: _Transaction | None,
                   pkt: Packet) -> list[tuple[int, Packet]]:
        args = split_args(pkt.payload)
        if len(args) < 2:
            raise _Err("EINVAL")
        path = self._valid(args[0], special=True)
        perms = args[1:]
        for p in perms:
            if len(p) < 2 or p[0] not in _PERM_LETTERS or not p[1:].isdigit() \
                    or int(p[1:]) > 0xFFFF:
                raise _Err("EINVAL")
        node = self._get(tree, tx, path)
        node.perms = list(perms)
        tree.bump(path)
        return self._changed(conn, tx, path)

    def _directory_part(self, tree: _Tree, tx: _Transaction | None, pkt: Packet) -> bytes:
        args = split_args(pkt.payload)
        if len(args) != 2 or not pkt.payload.endswith(b"\0"):
            raise _Err("EINVAL")
        path = self._valid(args[0])
        node = self._get(tree, tx, path)
        gen = str(node.generation).encode() + b"\0"
        children = b"".join(ch.encode() + b"\0" for ch in node.children)
        off = _atoi(args[1])
        if off >= len(children):
            return gen + b"\0"
        maxlen = MAX_PAYLOAD - len(gen) - 1
        end = off
        while end < len(children):
            nxt = children.index(b"\0", end) + 1
            if nxt - off > maxlen:
                break
            end = nxt
        part = children[off:end]
        return gen + part + (b"\0" if end == len(children) else b"")

    # -- watches and transactions ---------------------------------------------

    def _changed(self, conn: int, tx: _Transaction | None,
                 path: str) -> list[tuple[int, Packet]]:
        if tx is not None:
            tx.changed.append((path, False))
            return []
        return self._fire(path, exact=False)

    def _fire(self, name: str, exact: bool) -> list[tuple[int, Packet]]:
        out: list[tuple[int, Packet]] = []
        for cid, c in self.conns.items():
            for w in c.watches:
                hit = (w.canonical == name) if (exact or name.startswith("@")) \
                    else is_below(name, w.canonical)
                if not hit or (w.depth >= 0 and _levels(name, w.canonical) > w.depth):
                    continue
                path = name
                if w.relative and is_below(name, DOM0_PATH) and name != DOM0_PATH:
                    path = name[len(DOM0_PATH) + 1:]
                payload = path.encode() + b"\0" + w.token + b"\0"
                if len(payload) <= MAX_PAYLOAD:
                    out.append((cid, Packet(Op.WATCH_EVENT, 0, 0, payload)))
        return out

    def _watch(self, conn: int, c: _Conn, pkt: Packet) -> list[tuple[int, Packet]]:
        # Whole strings only (xenstored's get_strings); a third is the depth.
        args = pkt.payload.split(b"\0")[:-1]
        depth = -1
        if len(args) == 3:
            depth = _atoi_signed(args[2])
            if depth < 0:
                raise _Err("EINVAL")
        elif len(args) != 2:
            raise _Err("EINVAL")
        raw, token = args[0], args[1]
        if raw.startswith(b"@"):
            canonical = raw.decode("ascii", "replace")
            relative = False
        else:
            canonical = self._valid(raw)
            relative = not raw.startswith(b"/")
        for w in c.watches:
            if w.path == raw and w.token == token:
                raise _Err("EEXIST")
        c.watches.append(_Watch(raw, canonical, token, relative, depth))
        # Fires once on registration, for this watch only.
        return [(conn, Packet(Op.WATCH_EVENT, 0, 0, raw + b"\0" + token + b"\0"))]

    def _end(self, conn: int, c: _Conn, pkt: Packet) -> list[tuple[int, Packet]]:
        arg = one_arg(pkt.payload)
        if arg not in (b"T", b"F"):
            raise _Err("EINVAL")
        tx = c.transactions.pop(pkt.tx_id, None)
        if tx is None:
            raise _Err("ENOENT")
        if arg == b"F":
            return []
        for path in tx.accessed:
            if self.tree.versions.get(path, 0) != tx.start_versions.get(path, 0):
                raise _Err("EAGAIN")
        if not tx.changed:
            return []
        # Nothing it touched changed meanwhile: copy what it touched (parents of
        # created and removed nodes are among them, so child lists stay whole).
        for path in tx.accessed:
            mine = tx.tree.nodes.get(path)
            theirs = self.tree.nodes.get(path)
            if mine == theirs:
                continue
            if mine is None:
                del self.tree.nodes[path]
            else:
                self.tree.nodes[path] = copy.deepcopy(mine)
            self.tree.bump(path)
        self.tree.generation = max(self.tree.generation, tx.tree.generation)
        events: list[tuple[int, Packet]] = []
        order = {p: i for i, p in enumerate(tx.accessed)}
        for path, exact in sorted(tx.changed, key=lambda ch: order.get(ch[0], len(order))):
            events += self._fire(path, exact)
        return events


def _atoi(raw: bytes) -> int:
    """C's atoi: leading digits, 0 when there are none."""
    digits = b""
    for ch in raw:
        if 48 <= ch <= 57:
            digits += bytes([ch])
        else:
            break
    return int(digits) if digits else 0


def _atoi_signed(raw: bytes) -> int:
    """C's atoi, with a sign."""
    return -_atoi(raw[1:]) if raw.startswith(b"-") else _atoi(raw)


def _levels(name: str, top: str) -> int:
    """How many levels ``name`` lies below ``top`` (which it is below)."""
    def depth(p: str) -> int:
        return 0 if p == "/" else p.count("/")
    return depth(name) - depth(top)
