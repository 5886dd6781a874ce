"""The cache's memory: nodes a change leaves empty are removed, and the
cache is bounded by its estimated size, not only by its number of entries."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from xenstore_cache.cache import ENTRY_COST, NODE_COST, Cache, _Node
from xenstore_cache.wire import Op, Packet

DEEP = "/".join(["a"] * 1000)       # 1999 characters: a valid path


def _walk(cache: Cache) -> tuple[int, int, int]:
    """(trie nodes but the root, empty ones among them, entries), counted."""
    nodes = empty = entries = 0
    stack: list[_Node] = [cache._root]
    while stack:
        node = stack.pop()
        entries += len(node.entries)
        for child in node.children.values():
            nodes += 1
            empty += not child.children and not child.entries
            stack.append(child)
    return nodes, empty, entries


def _fill(cache: Cache, op: int, key: str, payload: bytes = b"v") -> bool:
    return cache.fill(cache.ticket(op, key), Packet(op, 9, 0, payload))


def _enabled(**kwargs: int) -> Cache:
    cache = Cache(**kwargs)
    cache.enabled = True
    return cache


def test_invalidating_a_deep_entry_leaves_no_node_behind() -> None:
    """The audit's case: a cached ENOENT a thousand levels down, then an RM
    of it; only the leaf went, 1000 empty nodes stayed per path."""
    cache = _enabled()
    for i in range(20):
        assert _fill(cache, Op.READ, f"/q{i}/{DEEP}")
        cache.invalidate(f"/q{i}/{DEEP}")
    assert _walk(cache) == (0, 0, 0)
    assert (cache.size, cache.nodes, len(cache)) == (0, 0, 0)


def test_invalidation_prunes_up_to_a_node_still_in_use() -> None:
    cache = _enabled()
    _fill(cache, Op.READ, "/x/y/z/deep")
    _fill(cache, Op.READ, "/x/other")
    cache.invalidate("/x/y/z/deep")
    assert _walk(cache) == (2, 0, 1)       # /x and /x/other
    cache.invalidate("/x/y/none")          # stops at a missing node: /x loses nothing more
    assert _walk(cache) == (2, 0, 1)
    cache.invalidate("/x/other")
    assert _walk(cache) == (0, 0, 0) and cache.size == 0


def test_flushing_permissions_prunes_what_held_only_them() -> None:
    cache = _enabled()
    _fill(cache, Op.GET_PERMS, f"/p/{DEEP}", b"n0\0")
    _fill(cache, Op.GET_PERMS, "/p", b"n0\0")
    _fill(cache, Op.READ, "/r/s")
    _fill(cache, Op.GET_PERMS, "/r/s", b"n0\0")
    cache.flush_perms()
    assert _walk(cache) == (2, 0, 1)       # /r and /r/s, holding its READ
    assert cache.size == cache.nodes * NODE_COST + len("r") + len("s") + ENTRY_COST + 1


def test_the_size_bound_holds_where_the_entry_bound_does_not() -> None:
    """A thousand entries a thousand levels down are a million nodes: the
    entry bound (65536) never trips, the size bound does."""
    cache = _enabled(max_bytes=4 << 20)
    for i in range(200):
        assert _fill(cache, Op.READ, f"/q{i}/{DEEP}")
        assert cache.size <= cache.max_bytes
    assert cache.overflows > 0
    assert cache.nodes < 12_000 and _walk(cache)[0] == cache.nodes


def test_the_entry_bound_still_holds() -> None:
    cache = _enabled(max_entries=3)
    for i in range(10):
        _fill(cache, Op.READ, f"/e/{i}")
        _fill(cache, Op.GET_DOMAIN_PATH, str(i), b"/local/domain/x\0")
        assert len(cache) <= 3


def test_a_fill_that_cannot_fit_is_not_stored() -> None:
    cache = _enabled(max_bytes=10_000)
    assert not _fill(cache, Op.READ, f"/{DEEP}")
    assert (cache.size, cache.nodes, len(cache)) == (0, 0, 0)
    assert _fill(cache, Op.READ, "/small")


def test_the_size_estimate_follows_the_memory_used() -> None:
    """The estimate is what bounds memory: it must not be far below what the
    trie really takes (measured, deep and wide shapes)."""
    for shape in ("deep", "wide"):
        cache = _enabled(max_bytes=1 << 40, max_entries=1 << 30)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(500):
                key = (f"/q{i}/" + "/".join(["abc"] * 40) if shape == "deep"
                       else f"/local/domain/{i % 20}/device/vif/{i}/state")
                _fill(cache, Op.READ, key, b"x" * 20)
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert 0.8 * used <= cache.size <= 2 * used, (shape, cache.size, used)


KEYS = st.sampled_from(["/", "/a", "/a/b", "/a/b/c", "/a/c", "/d", "/d/e/f/g"])


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(
    st.sampled_from(["fill", "fill", "invalidate", "perms", "flush"]), KEYS,
    st.sampled_from([Op.READ, Op.DIRECTORY, Op.GET_PERMS, Op.GET_DOMAIN_PATH]),
    st.binary(max_size=8)), max_size=30), max_bytes=st.sampled_from([3000, 1 << 20]))
def test_bookkeeping_matches_the_trie(steps: list[tuple[str, str, int, bytes]],
                                      max_bytes: int) -> None:
    """Whatever the order of fills and changes, the counters equal what a walk
    finds, no empty node is left, and the bounds hold."""
    cache = _enabled(max_bytes=max_bytes, max_entries=8)
    for kind, key, op, payload in steps:
        if kind == "fill":
            _fill(cache, op, key, payload)
        elif kind == "invalidate":
            cache.invalidate(key)
        elif kind == "perms":
            cache.flush_perms()
        else:
            cache.flush()
        nodes, empty, entries = _walk(cache)
        assert (nodes, empty) == (cache.nodes, 0)
        assert entries + len(cache._domain_paths) == len(cache) <= 8
        tree = sum(len(n) + NODE_COST for n in _names(cache._root))
        tree += sum(ENTRY_COST + len(p.payload) for p in _entries(cache._root))
        domain = sum(ENTRY_COST + len(k) + len(p.payload) for k, p in cache._domain_paths.items())
        assert cache.size == tree + domain <= max_bytes


def _names(root: _Node) -> list[str]:
    out: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        out.extend(node.children)
        stack.extend(node.children.values())
    return out


def _entries(root: _Node) -> list[Packet]:
    out: list[Packet] = []
    stack = [root]
    while stack:
        node = stack.pop()
        out.extend(node.entries.values())
        stack.extend(node.children.values())
    return out
