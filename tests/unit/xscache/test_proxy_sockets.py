"""The proxy over real Unix sockets, in front of the model xenstored.

Covers what the sans-I/O equivalence test cannot: framing faults from a
hostile client, clients that vanish mid-transaction, xenstored going away and
coming back, start-up refusals, socket modes, the stats command, and an
independent client implementation (pyxs) working through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenstore_cache import cli
from xenstore_cache.client import WireClient
from xenstore_cache.control import CONTROL_LINE_LIMIT, SetupError, query_control
from xenstore_cache.model_server import ModelServer, model_behind_proxy
from xenstore_cache.server import CachingProxy, Config, check_paths, probe_upstream
from xenstore_cache.wire import HEADER, Op, Packet


@dataclass
class Lab:
    dir: Path
    model: ModelServer
    proxy: CachingProxy

    @property
    def listen(self) -> Path:
        return self.proxy.cfg.listen


@contextlib.asynccontextmanager
async def lab(tmp: Path) -> AsyncIterator[Lab]:
    async with model_behind_proxy(tmp) as (model, proxy):
        yield Lab(tmp, model, proxy)


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes: keep them short.
    import tempfile
    with tempfile.TemporaryDirectory(prefix="xsc") as d:
        yield Path(d)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_reads_writes_transactions_and_watches_pass_through(short_tmp: Path) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            a = await WireClient.open(L.listen)
            b = await WireClient.open(L.listen)
            assert (await a.call(Op.WRITE, b"/t/x\0\xff\0bin")).payload == b"OK\0"
            for _ in range(3):
                assert (await b.call(Op.READ, b"/t/x\0")).payload == b"\xff\0bin"
            assert (await b.call(Op.DIRECTORY, b"/t\0")).payload == b"x\0"
            assert (await b.call(Op.READ, b"/t/none\0")).error_name == "ENOENT"
            assert (await b.call(Op.WRITE, b"/t/empty\0")).payload == b"OK\0"
            assert (await b.call(Op.READ, b"/t/empty\0")).payload == b""
            # A watch: registration event, then one per change, relative paths kept.
            assert (await b.call(Op.WATCH, b"rel\0tok\0")).payload == b"OK\0"
            await a.call(Op.WRITE, b"/local/domain/0/rel/k\0v")
            await b.call(Op.READ, b"rel/k\0")
            assert [e.payload for e in b.events] == [b"rel\0tok\0", b"rel/k\0tok\0"]
            # A transaction conflicting with a write from another client.
            tx = int((await a.call(Op.TRANSACTION_START, b"\0")).payload.rstrip(b"\0"))
            assert (await a.call(Op.READ, b"/t/x\0", tx)).payload == b"\xff\0bin"
            await a.call(Op.WRITE, b"/t/x\0mine", tx)
            await b.call(Op.WRITE, b"/t/x\0theirs")
            assert (await a.call(Op.TRANSACTION_END, b"T\0", tx)).error_name == "EAGAIN"
            assert (await b.call(Op.READ, b"/t/x\0")).payload == b"theirs"
            stats = L.proxy.stats()
            assert stats["hits"] >= 2 and stats["forwarded"] > 0
            a.close()
            b.close()
    run(body())


def test_quota_and_feature_requests_reach_xenstored_and_back(short_tmp: Path) -> None:
    """GET_QUOTA and SET_QUOTA (new in 4.22), GET_FEATURE and SET_FEATURE:
    the proxy forwards them as they are and relays xenstored's answer (here
    a model taught to answer them, so that an answer of the proxy's own
    would show)."""
    seen: list[tuple[Op, bytes]] = []

    async def body() -> None:
        async with lab(short_tmp) as L:
            plain = L.model.store.handle

            def handle(conn: int, pkt: Packet) -> list[tuple[int, Packet]]:
                if pkt.op in (Op.GET_QUOTA, Op.SET_QUOTA, Op.GET_FEATURE, Op.SET_FEATURE):
                    seen.append((pkt.op, pkt.payload))
                    return [(conn, pkt.reply(pkt.op, b"answer:" + pkt.payload))]
                return plain(conn, pkt)

            L.model.store.handle = handle  # type: ignore[method-assign]
            c = await WireClient.open(L.listen)
            for op, payload in ((Op.GET_QUOTA, b"0\0"), (Op.SET_QUOTA, b"0\0nodes\0100\0"),
                                (Op.GET_FEATURE, b"0\0"), (Op.SET_FEATURE, b"0\01\0")):
                reply = await c.call(op, payload)
                assert (reply.op, reply.payload) == (op, b"answer:" + payload), op
            c.close()
    run(body())
    assert [op for op, _ in seen] == [Op.GET_QUOTA, Op.SET_QUOTA, Op.GET_FEATURE, Op.SET_FEATURE]


def test_pyxs_works_through_the_proxy(short_tmp: Path) -> None:
    """pyxs is a client implementation independent of ours."""
    import pyxs
    from pyxs.connection import UnixSocketConnection

    ready = threading.Event()
    done = threading.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []
    listen = short_tmp / "xs"

    async def serve() -> None:
        async with lab(short_tmp):
            loop_box.append(asyncio.get_running_loop())
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.02)

    t = threading.Thread(target=run, args=(serve(),))
    t.start()
    try:
        assert ready.wait(10)
        router = pyxs.client.Router(UnixSocketConnection(str(listen)))
        with pyxs.Client(router=router) as c:
            c.write(b"/t/p", b"1")
            assert c.read(b"/t/p") == b"1"
            c.write(b"/t/p", b"2")
            assert c.read(b"/t/p") == b"2"
            assert c.list(b"/t") == [b"p"]
            c.set_perms(b"/t/p", [b"n0", b"r5"])
            assert c.get_perms(b"/t/p") == [b"n0", b"r5"]
            assert c.get_domain_path(7) == b"/local/domain/7"
            c.delete(b"/t")
            assert not c.exists(b"/t/p")
    finally:
        done.set()
        t.join(10)


def test_socket_modes_follow_xenstored(short_tmp: Path) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            up = (short_tmp / "up").stat()
            xs = L.listen.stat()
            assert stat.S_IMODE(xs.st_mode) == stat.S_IMODE(up.st_mode) == 0o600
            assert (xs.st_uid, xs.st_gid) == (up.st_uid, up.st_gid)
            assert stat.S_IMODE((short_tmp / "ctl").stat().st_mode) == 0o600
    run(body())


@pytest.mark.parametrize("blob, expect", [
    (HEADER.pack(Op.READ, 1, 0, 4097), "disconnected"),          # over the limit
    (HEADER.pack(Op.WRITE, 1, 0, 0xFFFFFFFF) + b"x", "disconnected"),
    (HEADER.pack(999, 5, 0, 2) + b"a\0", "ENOSYS"),               # unknown type
    (HEADER.pack(Op.WATCH_EVENT, 5, 0, 2) + b"a\0", "ENOSYS"),    # not a request
    (HEADER.pack(Op.ERROR, 5, 0, 0), "ENOSYS"),
    (HEADER.pack(Op.READ, 5, 0, 100) + b"/t/a\0", "truncated"),   # then hangs up
    (b"\x02\x00", "truncated"),                                    # half a header
])
def test_hostile_client_does_not_hurt_others(short_tmp: Path, blob: bytes, expect: str) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            good = await WireClient.open(L.listen)
            await good.call(Op.WRITE, b"/t/a\0before")
            assert (await good.call(Op.READ, b"/t/a\0")).payload == b"before"
            bad = await WireClient.open(L.listen)
            bad.w.write(blob)
            if expect == "disconnected":
                assert await bad.closed()
            elif expect == "truncated":
                bad.close()
            else:
                rsp = await bad.recv()
                assert (rsp.error_name, rsp.req_id) == (expect, 5)
                bad.close()
            await asyncio.sleep(0.05)
            await good.call(Op.WRITE, b"/t/a\0after")
            assert (await good.call(Op.READ, b"/t/a\0")).payload == b"after"
            other = await WireClient.open(L.listen)
            assert (await other.call(Op.READ, b"/t/a\0")).payload == b"after"
            good.close()
            other.close()
            if expect == "disconnected":
                assert L.proxy.protocol_errors == 1
    run(body())


def test_client_vanishing_in_a_transaction_with_watches(short_tmp: Path) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            base = len(L.model.store.conns)
            c = await WireClient.open(L.listen)
            await c.call(Op.WATCH, b"/t\0w\0")
            tx = int((await c.call(Op.TRANSACTION_START, b"\0")).payload.rstrip(b"\0"))
            await c.call(Op.WRITE, b"/t/half\0x", tx)
            # Half a request, then gone.
            c.w.write(HEADER.pack(Op.WRITE, 9, tx, 50) + b"/t/ha")
            assert len(L.model.store.conns) == base      # no connection of its own

            def leftovers() -> bool:
                return any(w.token.endswith(b"/w") or conn.transactions
                           for conn in L.model.store.conns.values() for w in conn.watches)
            assert leftovers()
            c.close()
            for _ in range(100):
                if not leftovers():
                    break
                await asyncio.sleep(0.02)
            assert not leftovers()          # its watch removed, its transaction aborted
            d = await WireClient.open(L.listen)
            assert (await d.call(Op.READ, b"/t/half\0")).error_name == "ENOENT"
            d.close()
    run(body())


def test_clients_share_one_connection_each_with_its_own_transactions_and_watches(
        short_tmp: Path) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            base = len(L.model.store.conns)
            a, b = await WireClient.open(L.listen), await WireClient.open(L.listen)
            assert (await a.call(Op.TRANSACTION_START, b"\0")).payload == b"1\0"
            assert (await b.call(Op.TRANSACTION_START, b"\0")).payload == b"1\0"
            await a.call(Op.WRITE, b"/t/a\0from a", 1)
            # b's transaction 1 is not a's: b's write does not land in a's.
            await b.call(Op.WRITE, b"/t/b\0from b", 1)
            assert (await b.call(Op.READ, b"/t/a\0", 1)).error_name == "ENOENT"
            assert (await b.call(Op.READ, b"/t/a\0", 2)).error_name == "ENOENT"  # not given
            await a.call(Op.WATCH, b"/t/a\0same\0")
            await b.call(Op.WATCH, b"/t/b\0same\0")
            await a.call(Op.TRANSACTION_END, b"T\0", 1)
            await b.call(Op.TRANSACTION_END, b"T\0", 1)
            await a.call(Op.GET_DOMAIN_PATH, b"0\0")
            await b.call(Op.GET_DOMAIN_PATH, b"0\0")
            assert {e.payload for e in a.events} == {b"/t/a\0same\0"}
            assert {e.payload for e in b.events} == {b"/t/b\0same\0"}
            assert len(L.model.store.conns) == base
            seen_a, seen_b = len(a.events), len(b.events)
            # RESET_WATCHES ends only the caller's watches and transactions.
            assert (await a.call(Op.RESET_WATCHES, b"")).payload == b"OK\0"
            await b.call(Op.WRITE, b"/t/b\0again")
            await b.call(Op.WRITE, b"/t/a\0again")
            await b.call(Op.GET_DOMAIN_PATH, b"0\0")
            await a.call(Op.GET_DOMAIN_PATH, b"0\0")
            assert len(a.events) == seen_a
            assert [e.payload for e in b.events[seen_b:]] == [b"/t/b\0same\0"]
            a.close()
            b.close()
    run(body())


def test_xenstored_going_away_and_coming_back(short_tmp: Path) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            c = await WireClient.open(L.listen)
            await c.call(Op.WRITE, b"/t/k\0old")
            assert (await c.call(Op.READ, b"/t/k\0")).payload == b"old"
            assert (await c.call(Op.READ, b"/t/k\0")).payload == b"old"   # cached
            await L.model.stop()
            assert await c.closed()          # an error, never a cached answer
            for _ in range(100):
                if not L.proxy.core.cache.enabled:
                    break
                await asyncio.sleep(0.02)
            assert not L.proxy.core.cache.enabled
            late = await WireClient.open(L.listen)
            assert await late.closed()
            # xenstored comes back with other contents: the old cache is gone.
            fresh = ModelServer(short_tmp / "up")
            await fresh.start()
            fresh.store.connect(999)
            fresh.store.handle(999, Packet(Op.WRITE, 1, 0, b"/t/k\0new"))
            await asyncio.wait_for(L.proxy.watch_ready.wait(), 5)
            again = await WireClient.open(L.listen)
            assert (await again.call(Op.READ, b"/t/k\0")).payload == b"new"
            assert L.proxy.upstream_losses == 1
            again.close()
            await fresh.stop()
    run(body())


def test_refuses_bad_setups(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = Config(listen=short_tmp / "s", upstream=short_tmp / "s", control=short_tmp / "c")
    with pytest.raises(SetupError, match="same path"):
        check_paths(same)
    os.symlink(short_tmp / "s", short_tmp / "link")
    with pytest.raises(SetupError, match="same path"):
        check_paths(Config(listen=short_tmp / "link", upstream=short_tmp / "s",
                           control=short_tmp / "c"))
    with pytest.raises(SetupError, match="does not exist"):
        probe_upstream(short_tmp / "nothing")
    (short_tmp / "plain").write_text("x")
    with pytest.raises(SetupError, match="does not answer"):
        probe_upstream(short_tmp / "plain")
    rc = cli.main(["run", "--listen", str(short_tmp / "xs"), "--upstream",
                   str(short_tmp / "nothing"), "--control", str(short_tmp / "c")])
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (short_tmp / "xs").exists()


@contextlib.contextmanager
def model_in_a_thread(path: Path) -> Iterator[None]:
    """The model xenstored on ``path``, served from a thread: the proxy's
    ``run`` wants the main thread (it sets signal handlers)."""
    loop = asyncio.new_event_loop()
    model = ModelServer(path)
    loop.run_until_complete(model.start())
    t = threading.Thread(target=loop.run_forever)
    t.start()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(model.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


@pytest.mark.parametrize("ready,message", [
    ("missing/ready", "its directory {d}/missing does not exist"),
    ("plain/ready", "its directory {d}/plain is not a directory"),
    ("adir", "is a directory"),
])
def test_run_refuses_a_ready_file_it_could_not_write(short_tmp: Path, ready: str, message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before serving: the proxy does not start, to fail when ready."""
    (short_tmp / "plain").write_text("x")
    (short_tmp / "adir").mkdir()
    with model_in_a_thread(short_tmp / "up"):
        rc = cli.main(["run", "--listen", str(short_tmp / "xs"), "--upstream",
                       str(short_tmp / "up"), "--control", str(short_tmp / "c"),
                       "--ready-file", str(short_tmp / ready)])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith(f"xenstore-cache: error: --ready-file {short_tmp / ready}")
    assert err.endswith(f" {message.format(d=short_tmp)}\n") and err.count("\n") == 1
    assert not (short_tmp / "xs").exists()


def test_run_stops_with_an_error_when_the_ready_file_cannot_be_written(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What the check up front cannot see (here: the check skipped) fails
    when the proxy is ready: it stops, with an error, not a traceback."""
    monkeypatch.setattr(cli, "check_writable_file", lambda path, what: None)
    ready = short_tmp / "missing" / "ready"
    with model_in_a_thread(short_tmp / "up"):
        rc = cli.main(["run", "--listen", str(short_tmp / "xs"), "--upstream",
                       str(short_tmp / "up"), "--control", str(short_tmp / "c"),
                       "--ready-file", str(ready)])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith(f"xenstore-cache: error: cannot write the ready file {ready}: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (short_tmp / "xs").exists()          # the proxy stopped


def test_refuses_a_xenstored_whose_socket_clients_are_not_privileged(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyxs

    def denied(self: object, path: bytes) -> list[bytes]:
        raise pyxs.PyXSError(13, "Permission denied")

    async def body() -> None:
        model = ModelServer(short_tmp / "up")
        await model.start()
        try:
            monkeypatch.setattr(pyxs.Client, "list", denied)
            with pytest.raises(SetupError, match="are not privileged"):
                await asyncio.to_thread(probe_upstream, short_tmp / "up")
            monkeypatch.undo()
            await asyncio.to_thread(probe_upstream, short_tmp / "up")    # a good one
        finally:
            await model.stop()
    run(body())


def test_stopping_the_proxy_ends_its_clients(short_tmp: Path) -> None:
    """libxenstore does not reconnect: a client of a proxy that stops sees
    its connection end (never a hang), and xenstored keeps nothing of it."""
    async def body() -> None:
        async with lab(short_tmp) as L:
            c = await WireClient.open(L.listen)
            await c.call(Op.WATCH, b"/t\0w\0")
            await c.call(Op.TRANSACTION_START, b"\0")
            await L.proxy.stop()
            assert await c.closed()
            for _ in range(100):
                if not L.model.store.conns:
                    break
                await asyncio.sleep(0.02)
            assert not L.model.store.conns      # the proxy's connection is gone
    run(body())


def test_stats_command(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            c = await WireClient.open(L.listen)
            await c.call(Op.WRITE, b"/t/s\0v")
            for _ in range(4):
                await c.call(Op.READ, b"/t/s\0")
            c.close()
            for _ in range(200):             # the proxy sees the hang-up
                if not L.proxy.stats()["clients"]:
                    break
                await asyncio.sleep(0.01)
            rc = await asyncio.to_thread(cli.main, ["stats", "--control", str(short_tmp / "ctl"),
                                                    "--json"])
            assert rc == 0
    run(body())
    import json
    stats = json.loads(capsys.readouterr().out)
    assert stats["per_op"]["READ"] == {"requests": 4, "hits": 3, "misses": 1, "forwarded": 1}
    assert stats["per_op"]["WRITE"]["forwarded"] == 1
    # The multiplexing figures: one client came and went over one upstream.
    assert (stats["clients"], stats["clients_total"]) == (0, 1)
    assert (stats["upstream_connections"], stats["upstream_requests_in_flight"]) == (1, 0)


def test_stats_command_prints_every_figure(short_tmp: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            c = await WireClient.open(L.listen)
            await c.call(Op.READ, b"/t\0")
            rc = await asyncio.to_thread(cli.main, ["stats", "--control", str(short_tmp / "ctl")])
            assert rc == 0
            c.close()
    run(body())
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()
                if line.strip() and not line.startswith("op "))
    assert rows["clients"] == "1" and rows["upstream_connections"] == "1"
    assert rows["upstream_requests_in_flight"] == "0"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda op, rid, tx, body: struct.pack("=IIII", op, rid, tx, len(body)) + body,
              st.sampled_from([*map(int, Op), 20, 999]), st.integers(0, 2**32 - 1),
              st.integers(0, 3), st.binary(max_size=30)),
), max_size=8))
def test_fuzzed_client_leaves_cache_and_others_consistent(short_tmp: Path,
                                                          chunks: list[bytes]) -> None:
    """Whatever one client sends, the others keep working and every cached
    entry equals what xenstored (the model) answers directly."""
    async def body() -> None:
        async with lab(short_tmp) as L:
            good = await WireClient.open(L.listen)
            await good.call(Op.WRITE, b"/t/a\0v")
            bad = await WireClient.open(L.listen)
            for chunk in chunks:
                if bad.w.is_closing():
                    break
                bad.w.write(chunk)
                await asyncio.sleep(0)
            with contextlib.suppress(Exception):
                await bad.w.drain()
            await asyncio.sleep(0.05)
            bad.close()
            for path in (b"/t/a", b"/t", b"/", b"/local/domain/0"):
                await good.call(Op.READ, path + b"\0")
                await good.call(Op.DIRECTORY, path + b"\0")
            await asyncio.sleep(0.05)
            probe = 10_000
            L.model.store.connect(probe)
            for op in (Op.READ, Op.DIRECTORY, Op.GET_PERMS):
                for path in ("/", "/t", "/t/a", "/local/domain/0", "/local"):
                    cached = L.proxy.core.cache.get(op, path)
                    if cached is not None:
                        want = L.model.store.handle(probe, Packet(op, 0, 0, path.encode() + b"\0"))
                        assert cached == want[0][1], (op, path)
            L.model.store.disconnect(probe)
            assert (await good.call(Op.READ, b"/t/a\0")).op in (Op.READ, Op.ERROR)
            good.close()
    run(body())


def test_staleness_measurement_sees_every_write(short_tmp: Path) -> None:
    """The measurement itself: each write made behind the proxy's back is
    eventually read through it, and the windows are reported."""
    from xenstore_cache.staleness import measure

    async def body() -> dict[str, object]:
        async with lab(short_tmp) as L:
            return await measure(L.listen, short_tmp / "up", samples=20)
    res = asyncio.run(body())
    assert res["samples"] == 20
    assert 0 <= res["window_s_median"] <= res["window_s_max"] < 5  # type: ignore[operator]


def test_a_client_woken_by_an_event_reads_the_new_value(short_tmp: Path) -> None:
    """The event a client receives for a change made elsewhere comes on the
    proxy's one connection, behind the invalidation: the client reads the new
    value (the ordering itself is checked without sockets, in test_equivalence)."""
    async def body() -> None:
        async with lab(short_tmp) as L:
            assert L.proxy.core.cache.enabled
            c = await WireClient.open(L.listen)
            await c.call(Op.WRITE, b"/t/w\0old")
            await c.call(Op.WATCH, b"/t/w\0tok\0")
            assert (await c.call(Op.READ, b"/t/w\0")).payload == b"old"
            assert (await c.call(Op.READ, b"/t/w\0")).payload == b"old"   # from the cache
            guest = await WireClient.open(short_tmp / "up")                # behind the proxy
            await guest.call(Op.WRITE, b"/t/w\0new")
            for _ in range(100):
                if any(e.payload == b"/t/w\0tok\0" for e in c.events[1:]):
                    break
                await c.call(Op.GET_DOMAIN_PATH, b"0\0")
            assert any(e.payload == b"/t/w\0tok\0" for e in c.events[1:])
            assert (await c.call(Op.READ, b"/t/w\0")).payload == b"new"
            # The cache is shared: a client without the watch reads it fresh too.
            other = await WireClient.open(L.listen)
            assert (await other.call(Op.READ, b"/t/w\0")).payload == b"new"
            c.close()
            other.close()
            guest.close()
    run(body())


def test_control_socket_rejects_junk(short_tmp: Path) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            for junk in (b"not json\n", b'{"cmd": "reboot"}\n', b"x" * 70000 + b"\n"):
                r, w = await asyncio.open_unix_connection(str(short_tmp / "ctl"))
                w.write(junk)
                line = await asyncio.wait_for(r.readline(), 5)
                w.close()
                if line:
                    assert b'"ok": false' in line
            # Still serving, and still answering stats.
            r, w = await asyncio.open_unix_connection(str(short_tmp / "ctl"))
            w.write(b'{"cmd": "stats"}\n')
            assert b'"ok": true' in await asyncio.wait_for(r.readline(), 5)
            w.close()
            assert L.proxy.core.cache.enabled
    run(body())


def test_stats_stay_readable_after_many_unknown_request_types(short_tmp: Path) -> None:
    """Each unknown type had its own counter: 2000 of them made the stats
    line longer than the control client reads."""
    async def body() -> None:
        async with lab(short_tmp) as L:
            c = await WireClient.open(L.listen)
            n = 2000
            c.w.write(b"".join(Packet(1000 + i, i, 0, b"").encode() for i in range(n)))
            for i in range(n):
                rsp = await c.recv()
                assert (rsp.error_name, rsp.req_id) == ("ENOSYS", i)
            stats = await query_control(short_tmp / "ctl")
            assert stats["per_op"] == {"UNKNOWN": {"requests": n, "hits": 0, "misses": 0,
                                                   "forwarded": 0}}
            assert stats["local_errors"] == n
            c.close()
            assert L.proxy.core.cache.enabled
    run(body())


def test_a_control_reply_never_exceeds_what_its_reader_reads(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        async with lab(short_tmp) as L:
            # An unknown command is echoed, cut short: not 4x its size.
            with pytest.raises(SetupError, match="unknown command") as err:
                await query_control(short_tmp / "ctl", "\0" * 10_000)
            assert len(str(err.value)) < 300
            # Whatever else grew too long comes as an error, not as a line
            # the client cannot read.
            monkeypatch.setattr(L.proxy, "stats", lambda: {"x": "y" * CONTROL_LINE_LIMIT})
            with pytest.raises(SetupError, match="exceeds"):
                await query_control(short_tmp / "ctl")
    run(body())
