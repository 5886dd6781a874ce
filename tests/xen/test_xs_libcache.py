"""libxenstore's cache of reads (XS_OPEN_CACHE, toolstack patches
"tools/xenstore: tell privileged socket clients that their events are
ordered", "tools/libs/store: add an opt-in cache of reads", "libxl: let an
application read Xenstore through libxenstore's cache", and the cache's
watch: "let a cache that is not read from drop its watch", "let a cache
that does not pay for its events drop its watch", "register the cache's
watch only when reads would pay", "stake on the cache's watch what the
reads earned"), against the running xenstored.

What it must never do is answer with a value older than what the handle has
already been told: the freshness test has a writer commit {state=k,
ring-ref=k} in one transaction and a cached reader, woken by its watch on
``state``, read ``ring-ref``, thousands of times.  What it must do is save
requests: xenstored's own trace counts those that reach it."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from pyxen.errors import XenstoreError
from pyxen.lab.dom0.xstrace import (LIBXENSTORE_CACHE_TOKEN, TraceReader, connection_of,
                                    count_requests, trace_path)
from pyxen.xenstore import XENBUS_DEVICE, XenStore, cache_supported

#: The cache's own tests: stock's suite leaves them out (its libxenstore has
#: no cache); test_host.py checks that pyxen refuses a cached handle there.
pytestmark = [pytest.mark.xen, pytest.mark.series_only]

ROOT = f"/pyxen-libcache-{os.getpid()}"
#: Lockstep rounds of the freshness test (``run_length``; ~0.15 s a round
#: under TCG): 300 in CI, 1000 in scheduled runs, 2000 otherwise.
ROUNDS = {"ci": 300, "scheduled": 1000, "default": 2000}
#: Reads of ring-ref a round: the last is a hit (see the freshness test).
READS_A_ROUND = 3

#: libxenstore's accounting of the cache's watch: the most events the watch
#: may cost with no hit (XS_CACHE_CREDIT), the events a hit pays for
#: (XS_CACHE_HIT_CREDIT), and the window of reads by which a handle without
#: the watch decides whether to register it, the first one and the one
#: after a period that did not pay (XS_CACHE_WINDOW_MIN; twice as long
#: after each further such period).
CREDIT = 256
HIT_CREDIT = 8
WINDOW = 16


def grant(same: int) -> int:
    """The credit a registration starts with, decided by a window of which
    ``same`` reads could have been hits: what they would have earned."""
    return min(CREDIT, HIT_CREDIT * same)


#: The credit of a registration by :func:`arm`: its window's reads all
#: repeat the first's answer.
ARMED_CREDIT = grant(WINDOW - 1)

#: The bit of GET_FEATURE's answer that promises ordered events
#: (XENSTORE_SERVER_FEATURE_ORDERED_EVENTS in xs_wire.h, added by
#: "tools/xenstore: tell privileged socket clients that their events are
#: ordered"), which xenstored does not promise on dom0's kernel's ring
#: (XENBUS_DEVICE).
ORDERED_EVENTS = 16

#: A process that asks libxenstore for xenstored's features through the
#: kernel's ring first (xs_get_features_supported(), which upstream kept
#: process-wide), then reads one path through a cached socket handle;
#: prints what the ring answered and the values read.
#: argv: device, path, marker (the handle reads its permissions first, to
#: be found in xenstored's trace), reads.
RING_FIRST = """
import ctypes, json, os, sys
from pyxen.xenstore import XenStore
device, path, marker, reads = sys.argv[1:5]
lib = ctypes.CDLL("libxenstore.so.4")
lib.xs_open.argtypes, lib.xs_open.restype = [ctypes.c_ulong], ctypes.c_void_p
lib.xs_get_features_supported.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint)]
lib.xs_get_features_supported.restype = ctypes.c_bool
lib.xs_close.argtypes = [ctypes.c_void_p]
os.environ["XENSTORED_PATH"] = device
ring = lib.xs_open(0)
if not ring:
    sys.exit(f"xs_open through {device} failed")
features = ctypes.c_uint()
if not lib.xs_get_features_supported(ring, ctypes.byref(features)):
    sys.exit(f"GET_FEATURE through {device} failed")
lib.xs_close(ring)
del os.environ["XENSTORED_PATH"]
with XenStore(cache=True) as cached:
    cached.get_perms(marker)
    values = {cached.read(path).decode() for _ in range(int(reads))}
print(json.dumps({"ring_features": features.value, "values": sorted(values)}))
"""


@pytest.fixture
def stores(host, monkeypatch) -> Iterator[tuple[XenStore, XenStore]]:  # type: ignore[no-untyped-def]
    """(cached, plain) handles on xenstored's socket, and a scratch tree."""
    if not cache_supported():
        pytest.skip("this libxenstore has no XS_OPEN_CACHE (stock toolstack)")
    # The lab turns the library's cache off for every program but +libcache
    # variants; this process asks for it.
    monkeypatch.setenv("LIBXENSTORE_CACHE", "1")
    cached, plain = XenStore(cache=True), XenStore()
    plain.write(f"{ROOT}/x", "0")
    try:
        yield cached, plain
    finally:
        plain.rm(ROOT)
        cached.close()
        plain.close()


def trace_from_now() -> TraceReader:
    """xenstored's trace from here on; the test is skipped without one."""
    trace = TraceReader(trace_path())
    if not trace.path.exists():
        pytest.skip("xenstored runs without its trace (-T)")
    return trace


def requests_during(body, conn: str | None = None) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Requests by type that xenstored logged while ``body()`` ran: every
    connection's, or only ``conn``'s (see :func:`connection`)."""
    trace = trace_from_now()
    body()
    return trace.take(conn)


def connection(store: XenStore) -> str:
    """``store``'s connection as xenstored's trace names it, found by a
    request no other client sends (GET_PERMS of a path of its own)."""
    marker = f"{ROOT}/conn-{id(store)}"
    with XenStore() as xs:
        xs.write(marker, "")
    trace = trace_from_now()
    store.get_perms(marker)
    return connection_of(trace.take_text(), "GET_PERMS", marker)


def arm(cached: XenStore, path: str) -> bytes:
    """Read ``path`` (which nobody changes meanwhile) until the cache has its
    watch: the first window's reads, WINDOW, all but the first answered as
    the time before, pay for it, and the next read registers it.  Returns
    the value; the reads after the next one are hits (the next one too,
    unless the watch's first event came after the last read was sent)."""
    values = {cached.read(path) for _ in range(WINDOW + 1)}
    assert len(values) == 1, f"{path} changed while arming the cache: {values}"
    return values.pop()


def reads_of(store: XenStore, path: str, n: int, conn: str) -> Counter[str]:
    """Requests by type that connection ``conn`` sent while ``store`` read
    ``path`` ``n`` times."""
    return requests_during(lambda: [store.read(path) for _ in range(n)], conn)


def changes_elsewhere(plain: XenStore, n: int) -> None:
    """``n`` changes of a path nobody reads (an event each for a cached
    handle's watch), then a pause: the library sends its unwatch when no
    request of the handle's is in flight, so its reader thread takes the
    events in peace."""
    for i in range(n):
        plain.write(f"{ROOT}/w", str(i))
    time.sleep(2)


def reads_reaching_xenstored(body) -> int:  # type: ignore[no-untyped-def]
    """READ and DIRECTORY requests xenstored logged while ``body()`` ran."""
    ops = requests_during(body)
    return ops["READ"] + ops["DIRECTORY"]


def test_repeated_reads_are_answered_from_memory(stores) -> None:  # type: ignore[no-untyped-def]
    cached, plain = stores
    x = f"{ROOT}/x"
    # The first window's reads go out, then the one that registers the
    # watch; the rest do not.
    conn = connection(cached)
    first = reads_of(cached, x, WINDOW, conn)
    assert first["READ"] == WINDOW and first["WATCH"] == 0, \
        f"the first window's {WINDOW} reads: {first}"
    # They all repeated the first's answer: the next read registers it.
    armed = requests_during(lambda: cached.read(x), conn)
    assert armed["WATCH"] == 1 and armed["READ"] == 1, f"the read after the window: {armed}"
    # That read's answer is not kept if the watch's first event (on "/",
    # which drops everything) was read after the read was sent: then the
    # next read fills the cache.
    hits = reads_of(cached, x, 200, conn)
    assert hits["READ"] <= 1, f"{hits['READ']} of 200 reads of an armed cache reached xenstored"
    m = reads_reaching_xenstored(lambda: [plain.read(f"{ROOT}/x") for _ in range(200)])
    assert m >= 200, f"only {m} of 200 uncached reads reached xenstored: trace not counting"


def test_the_cache_asks_its_own_connection_whether_events_are_ordered(stores) -> None:  # type: ignore[no-untyped-def]
    """xenstored's features depend on the connection asking; upstream's
    libxenstore kept the first answer of a process for every handle
    (xs_get_features_supported()).  A process that asked through the
    kernel's ring first, whose answer lacks the ordered-events bit, still
    gets a cache on its socket handles: the answer is kept per handle.
    (Asked the other way round, a cache on the ring would not be safe; the
    library gives ring handles none.)"""
    _, plain = stores
    assert os.path.exists(XENBUS_DEVICE), f"no {XENBUS_DEVICE} in this dom0"
    marker = f"{ROOT}/conn-ring-first"
    plain.write(marker, "")
    reads = WINDOW + 1 + 50
    trace = trace_from_now()
    run = subprocess.run([sys.executable, "-c", RING_FIRST, XENBUS_DEVICE, f"{ROOT}/x",
                          marker, str(reads)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, f"the ring-first process failed: {run.stderr.strip()[-2000:]}"
    text = trace.take_text()
    got = json.loads(run.stdout)
    assert not got["ring_features"] & ORDERED_EVENTS, \
        f"the ring reported ordered events ({got['ring_features']:#x}): nothing tested"
    assert got["values"] == ["0"]
    mine = count_requests(text, connection_of(text, "GET_PERMS", marker))
    # The first window, the read that registers the watch, and at most the
    # fill after it (see arm()); the rest are hits.
    assert mine["WATCH"] == 1 and mine["READ"] <= WINDOW + 2, \
        f"{reads} reads through a cached handle in a process that asked the ring's " \
        f"features first: {dict(mine)}"


def test_a_change_by_another_connection_is_seen(stores) -> None:  # type: ignore[no-untyped-def]
    cached, plain = stores
    assert arm(cached, f"{ROOT}/x") == b"0"
    assert cached.read(f"{ROOT}/x") == b"0"
    assert cached.directory(ROOT) == ["x"]
    plain.write(f"{ROOT}/x", "1")
    plain.write(f"{ROOT}/y", "new")
    # Ordered with a later reply on the cached connection: any request
    # answered by xenstored after the writes brings their events first.
    cached.get_perms(ROOT)
    assert cached.read(f"{ROOT}/x") == b"1"
    assert sorted(cached.directory(ROOT)) == ["x", "y"]
    plain.rm(f"{ROOT}/y")
    cached.get_perms(ROOT)
    assert not cached.exists(f"{ROOT}/y")
    assert cached.directory(ROOT) == ["x"]


def test_own_writes_are_read_back(stores) -> None:  # type: ignore[no-untyped-def]
    cached, _ = stores
    arm(cached, f"{ROOT}/x")
    for i in range(50):
        cached.write(f"{ROOT}/x", str(i))
        assert cached.read(f"{ROOT}/x") == str(i).encode()
    cached.rm(f"{ROOT}/x")
    with pytest.raises(XenstoreError) as exc:
        cached.read(f"{ROOT}/x")
    assert exc.value.errno == errno.ENOENT


def test_transactions_are_never_answered_from_memory(stores) -> None:  # type: ignore[no-untyped-def]
    cached, _ = stores
    arm(cached, f"{ROOT}/x")

    def in_tx() -> None:
        for _ in range(20):
            with cached.transaction() as tx:
                tx.read(f"{ROOT}/x")
    assert reads_reaching_xenstored(in_tx) >= 20


def test_the_domain_path_is_answered_locally(stores) -> None:  # type: ignore[no-untyped-def]
    cached, plain = stores
    domids = (0, 7, 65535)
    mine = requests_during(lambda: [cached.get_domain_path(d) for d in domids])
    assert mine["GET_DOMAIN_PATH"] == 0
    theirs = requests_during(lambda: [plain.get_domain_path(d) for d in domids])
    assert theirs["GET_DOMAIN_PATH"] >= 3
    assert [cached.get_domain_path(d) for d in domids] == \
        [plain.get_domain_path(d) for d in domids] == [f"/local/domain/{d}" for d in domids]


def test_the_cache_token_is_reserved(stores) -> None:  # type: ignore[no-untyped-def]
    cached, plain = stores
    with pytest.raises(XenstoreError) as exc:
        cached.watch(ROOT, f"{LIBXENSTORE_CACHE_TOKEN}mine")
    assert exc.value.errno == errno.EINVAL
    plain.watch(ROOT, f"{LIBXENSTORE_CACHE_TOKEN}mine")   # an uncached handle may use any token
    plain.unwatch(ROOT, f"{LIBXENSTORE_CACHE_TOKEN}mine")


def test_an_unused_cache_lets_go_of_its_watch(stores) -> None:  # type: ignore[no-untyped-def]
    """A cached handle that takes its credit of its watch's events without a read
    unwatches "/" (xenstored no longer sends it every change) and empties
    its cache; reads that repeat their answers register the watch again,
    after a few windows."""
    cached, plain = stores
    conn = connection(cached)
    x = f"{ROOT}/x"
    assert arm(cached, x) == b"0"

    trace = trace_from_now()
    changes_elsewhere(plain, CREDIT + 64)
    text = trace.take_text()
    ops, mine = count_requests(text), count_requests(text, conn)
    assert ops["WRITE"] >= CREDIT, f"xenstored's trace missed the writes: {ops}"
    assert mine["UNWATCH"] == 1, \
        f"the cached handle kept its watch on / after {CREDIT + 64} events unread: {mine}"
    # Emptied: a change made while nothing watches for the cache is seen.
    plain.write(x, "1")
    cached.get_perms(ROOT)
    assert cached.read(x) == b"1"          # sent to xenstored
    # The period cost its credit, ARMED_CREDIT events (120), for 1 read, the
    # one that registered the watch.  Windows of WINDOW reads follow, all
    # answered as the time before (but the first read, after the table was
    # emptied), which pay for 8 events a read; each that does not halves the
    # estimate: judged at 120, 60, 30 and 15 events a read they do not, at
    # 7.5 the 5th does (also if the watch's first event was counted).  So
    # the watch is back on the 81st read after it went; with a whole CREDIT
    # staked (judged at 256 down to 8), on the 97th...
    first = reads_of(cached, x, WINDOW - 1, conn)
    assert first["WATCH"] == 0 and first["READ"] == WINDOW - 1, \
        f"armed again within a window of reads after a period that did not pay: {first}"
    waiting = reads_of(cached, x, 4 * WINDOW, conn)
    assert waiting["WATCH"] == 0 and waiting["READ"] == 4 * WINDOW, \
        f"armed again before the estimate of its cost fell to what the reads pay: {waiting}"
    # ...and once back, the reads are hits; changes are seen.
    again = reads_of(cached, x, WINDOW, conn)
    assert again["WATCH"] == 1, \
        f"the cache was not armed again at the 5th window (staked more than it earned?): {again}"
    hits = reads_of(cached, x, 20, conn)
    assert hits["READ"] == 0 and hits["WATCH"] == 0, f"not answered from memory: {hits}"
    plain.write(x, "2")
    cached.get_perms(ROOT)
    assert cached.read(x) == b"2"


def test_a_cache_that_never_hits_lets_go_and_waits(stores) -> None:  # type: ignore[no-untyped-def]
    """A handle that keeps reading, but never a path it has read before,
    pays the watch's events for nothing: it unwatches "/" once its credit's
    events came with no hit, and sends a window of WINDOW reads uncached before
    it registers the watch again, if they repeat answers enough to pay for
    its last period's events per read (about one)."""
    cached, plain = stores
    conn = connection(cached)
    for i in range(CREDIT):
        plain.write(f"{ROOT}/n/{i}", str(i))   # before the watch: no events
    assert arm(cached, f"{ROOT}/x") == b"0"

    def misses() -> None:
        # Reads (each a miss) stop before the credit is spent, so that none
        # counts towards the wait below.
        for i in range(ARMED_CREDIT + 64):
            plain.write(f"{ROOT}/w", str(i))
            if i < ARMED_CREDIT - 16:
                assert cached.read(f"{ROOT}/n/{i}") == str(i).encode()
        time.sleep(2)
    ops = requests_during(misses, conn)
    assert ops["READ"] >= ARMED_CREDIT - 16, f"xenstored's trace missed the reads: {ops}"
    assert ops["UNWATCH"] == 1, \
        f"the cache kept its watch after {ARMED_CREDIT + 64} events and no hit: {ops}"
    # Waits: a window of reads of one path goes to xenstored, none arms...
    x = f"{ROOT}/x"
    waiting = reads_of(cached, x, WINDOW, conn)
    assert waiting["WATCH"] == 0 and waiting["READ"] == WINDOW, \
        f"not {WINDOW} reads sent uncached before re-arming: {waiting}"
    # ...whose answers, all the same, pay: the next arms it again, and reads
    # after it are hits.
    armed = reads_of(cached, x, 20, conn)
    assert armed["WATCH"] == 1, f"not armed again after {WINDOW} reads: {armed}"
    assert armed["READ"] <= 2, f"{armed['READ']} of 20 reads reached xenstored once armed"


#: Reads that could never be hits, each with what it does before reading.
NEVER_HITS = ["one path changing", "new paths", "a missing path",
              "its own writes", "after its watch's event"]


@pytest.mark.parametrize("pattern", NEVER_HITS)
def test_a_handle_whose_reads_never_could_hit_never_watches(stores, pattern) -> None:  # type: ignore[no-untyped-def]
    """Reads that the cache could never answer do not pay for the watch,
    however often their answers repeat: a path read after each change to
    it, paths never read before, an error (ENOENT is not cached), a path
    that the handle itself wrote (with the same value) before each read,
    a read right after one of the application's watch events (after one,
    reads go to xenstored until a reply).  Window after window, the handle
    sends them to xenstored without registering the watch."""
    cached, plain = stores
    x, state = f"{ROOT}/x", f"{ROOT}/state"
    n = 4 * WINDOW
    if pattern == "after its watch's event":
        cached.watch(state, "ev")
        assert cached.read_watch(timeout=10) == (state, "ev")   # the initial event
    conn = connection(cached)

    def read(i: int) -> None:
        if pattern == "one path changing":
            plain.write(x, str(i))
            cached.get_perms(ROOT)     # brings the write's events, if watched
            assert cached.read(x) == str(i).encode()
        elif pattern == "new paths":
            plain.write(f"{ROOT}/n/{i}", "same")
            cached.get_perms(ROOT)
            assert cached.read(f"{ROOT}/n/{i}") == b"same"
        elif pattern == "a missing path":
            with pytest.raises(XenstoreError) as exc:
                cached.read(f"{ROOT}/missing")
            assert exc.value.errno == errno.ENOENT
        elif pattern == "its own writes":
            cached.write(x, "same")
            assert cached.read(x) == b"same"
        else:
            plain.write(state, "same")
            assert cached.read_watch(timeout=10) == (state, "ev")
            assert cached.read(x) == b"0"

    def reads() -> None:
        for i in range(n):
            read(i)
    ops = requests_during(reads, conn)
    assert ops["READ"] == n, f"xenstored's trace missed the reads: {ops}"
    assert ops["WATCH"] == 0, f"the cache registered its watch for reads that never hit: {ops}"


def test_no_answer_read_without_the_watch_is_kept(stores) -> None:  # type: ignore[no-untyped-def]
    """Reads sent while the watch is off are only noted (by hash), never
    stored: a change made then, with nothing watching for the cache, is
    read back once the watch is registered."""
    cached, plain = stores
    x = f"{ROOT}/x"
    for _ in range(WINDOW):
        assert cached.read(x) == b"0"
    plain.write(x, "1")
    plain.write(f"{ROOT}/y", "y")
    conn = connection(cached)
    armed = requests_during(lambda: cached.read(f"{ROOT}/y"), conn)
    assert armed["WATCH"] == 1, f"the window's repeated reads did not register the watch: {armed}"
    assert cached.read(x) == b"1"


@pytest.mark.parametrize("events_a_hit, lets_go", [(HIT_CREDIT // 2, False),
                                                   (2 * HIT_CREDIT, True)])
def test_a_cache_keeps_its_watch_while_its_hits_pay(stores, events_a_hit, lets_go) -> None:  # type: ignore[no-untyped-def]
    """One hit pays for HIT_CREDIT of the watch's events: a handle that reads
    one path once every ``events_a_hit`` changes elsewhere keeps its watch
    with a hit every HIT_CREDIT/2 events, and lets go of it with one every
    2 * HIT_CREDIT (its credit, ARMED_CREDIT, then falls by HIT_CREDIT every
    2 * HIT_CREDIT events: gone after about 2 * ARMED_CREDIT)."""
    cached, plain = stores
    conn = connection(cached)
    x = f"{ROOT}/x"
    assert arm(cached, x) == b"0"
    # Past the expected end by fewer reads than WINDOW: no re-arming.
    n = 2 * ARMED_CREDIT + (WINDOW // 2) * events_a_hit if lets_go else 3 * CREDIT

    def reads() -> None:
        for i in range(n):
            plain.write(f"{ROOT}/w", str(i))
            if i % events_a_hit == 0:
                assert cached.read(x) == b"0"
        time.sleep(2)
    ops = requests_during(reads, conn)
    assert ops["UNWATCH"] == (1 if lets_go else 0), \
        f"a hit every {events_a_hit} events, {n} events: {ops}"
    assert ops["WATCH"] == 0, f"armed again: {ops}"


@pytest.mark.parametrize("same", [4, WINDOW - 1])
def test_a_registration_stakes_what_its_window_earned(stores, same) -> None:  # type: ignore[no-untyped-def]
    """The window of reads that registers the watch gives it the credit its
    reads would have earned as hits, HIT_CREDIT for each that could have
    been one: a window of WINDOW reads of which 4 repeat an answer (enough at
    one event a read) stakes 32 events, and a handle that then reads nothing
    lets go of the watch within twice that many; one with 15 repeats in 16
    stakes 120, and keeps it through as many events."""
    cached, plain = stores
    conn = connection(cached)
    x = f"{ROOT}/x"
    others = WINDOW - same - 1
    for i in range(others):
        plain.write(f"{ROOT}/n/{i}", "v")   # no watch yet: no events
    events = 2 * grant(4)

    def window_then_events() -> None:
        # The window: x read same + 1 times (the first is no repeat), then
        # paths never read before; the next read registers the watch.
        for _ in range(same + 1):
            assert cached.read(x) == b"0"
        for i in range(others):
            assert cached.read(f"{ROOT}/n/{i}") == b"v"
        assert cached.read(x) == b"0"
        changes_elsewhere(plain, events)
    ops = requests_during(window_then_events, conn)
    assert ops["READ"] == WINDOW + 1, f"xenstored's trace missed the reads: {ops}"
    assert ops["WATCH"] == 1, f"{same} repeats in a window of {WINDOW} did not register: {ops}"
    assert ops["UNWATCH"] == (1 if same == 4 else 0), \
        f"{events} events after a window with {same} repeats (credit {grant(same)}): {ops}"


def test_a_cache_whose_hits_paid_watches_again_at_once(stores) -> None:  # type: ignore[no-untyped-def]
    """A handle whose hits paid for all its watch's events, and which then
    went quiet, registers the watch again at its next read, with a whole
    CREDIT: it keeps it through CREDIT - 56 events, and lets go after
    CREDIT + 64."""
    cached, plain = stores
    conn = connection(cached)
    x = f"{ROOT}/x"
    assert arm(cached, x) == b"0"
    # 40 reads, 39 hits at least: 312 events' worth, the credit at CREDIT.
    hits = reads_of(cached, x, 40, conn)
    assert hits["READ"] <= 1, f"not answered from memory: {hits}"
    quiet = requests_during(lambda: changes_elsewhere(plain, CREDIT + 64), conn)
    assert quiet["UNWATCH"] == 1, f"kept its watch through {CREDIT + 64} events unread: {quiet}"
    # The period paid (its hits for more than its CREDIT events): no window.
    back = requests_during(lambda: cached.read(x), conn)
    assert back["WATCH"] == 1, f"a handle whose hits paid did not register at once: {back}"
    kept = requests_during(lambda: changes_elsewhere(plain, CREDIT - 56), conn)
    assert kept["UNWATCH"] == 0, f"let go within {CREDIT - 56} events: less than CREDIT staked: {kept}"
    gone = requests_during(lambda: changes_elsewhere(plain, 120), conn)
    assert gone["UNWATCH"] == 1, f"kept its watch through {CREDIT + 64} events unread: {gone}"


def test_a_reader_woken_by_its_watch_never_reads_older_than_the_event(stores, run_length) -> None:  # type: ignore[no-untyped-def]
    """The freshness test: a writer on its own connection commits
    {state=k, ring-ref=k} in one transaction, then waits; the cached reader,
    woken by its watch on ``state``, reads ``ring-ref`` (from memory if it
    can) and must see k, in every one of its rounds."""
    rounds = run_length("PYXEN_LIBCACHE_ROUNDS", **ROUNDS)
    cached, plain = stores
    conn = connection(cached) if trace_path().exists() else None
    state, ring = f"{ROOT}/state", f"{ROOT}/ring-ref"
    plain.write(state, "0")
    plain.write(ring, "0")
    cached.watch(state, "fresh")
    assert cached.read_watch(timeout=10) == (state, "fresh")   # the initial event
    assert arm(cached, ring) == b"0"   # cached from here on
    stale: list[tuple[int, bytes]] = []
    go, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for k in range(1, rounds + 1):
                def commit(tx, k=k):  # type: ignore[no-untyped-def]
                    tx.write(state, str(k))
                    tx.write(ring, str(k))
                plain.run_transaction(commit)
                if not go.wait(timeout=30):
                    raise TimeoutError(f"reader did not answer round {k}")
                go.clear()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            done.set()

    # What reaches xenstored: the third read of each round must not (with
    # the cache off the test would pass as well, with a READ more a round).
    trace = TraceReader(trace_path())
    t = threading.Thread(target=writer)
    t.start()
    try:
        for k in range(1, rounds + 1):
            ev = cached.read_watch(timeout=30)
            assert ev == (state, "fresh"), f"round {k}: {ev}"
            # After the event reads go to xenstored until a reply has been
            # read after it; the first one's reply is not kept either when
            # the cache's own events of the commit (queued before it) were
            # read after it was sent, as here: xenstored may have dropped a
            # later duplicate of such an event.  The second read's reply is
            # kept and the third is answered from memory.  All three must
            # be this round's.
            for _ in range(READS_A_ROUND):
                got = cached.read(ring)
                if got != str(k).encode():
                    stale.append((k, got))
            go.set()
    finally:
        done.wait(timeout=60)
        t.join(timeout=5)
        cached.unwatch(state, "fresh")
    assert not errors, errors
    assert not stale, f"{len(stale)} stale reads of {rounds}, first {stale[:5]}"
    if trace.path.exists():
        text = trace.take_text()
        ops, mine = count_requests(text), count_requests(text, conn)
        # The trace did log the run: the writer's transactions are there.
        assert ops["TRANSACTION_START"] >= rounds, f"xenstored's trace missed the run: {ops}"
        # A round's hit pays for its two events; more than HIT_CREDIT - 2
        # changes a round from elsewhere would use up the credit.
        # The one UNWATCH is the test's own, of state, above.
        assert mine["UNWATCH"] == 1, \
            f"the cache let go of its watch (other changes in the store meanwhile?): {mine}"
        # Two a round on the reader's connection (a tenth more allowed).
        assert mine["READ"] <= rounds * (READS_A_ROUND - 1) + rounds // 10, \
            f"{mine['READ']} READs reached xenstored in {rounds} rounds of {READS_A_ROUND} " \
            "reads of ring-ref: the last of each was not answered from the cache"
