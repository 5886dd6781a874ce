"""The control socket's client and ``xenstore-cache stats`` against a control
socket that answers junk, or nothing: one line on stderr naming the socket
and what is wrong, a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import functools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenstore_cache import cli
from xenstore_cache.control import ControlReplyError, SetupError, query_control


@pytest.fixture
def ctl() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes: keep them short.
    with tempfile.TemporaryDirectory(prefix="xsc") as d:
        yield Path(d) / "ctl"


def _stats_via(ctl: Path, reply: bytes | None, argv: list[str]) -> int:
    """Run ``xenstore-cache stats`` against a control socket that sends
    ``reply`` to each request (None: reads it and never answers)."""
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        if reply is None:
            await asyncio.sleep(30)
        else:
            w.write(reply)
            await w.drain()
        w.close()

    async def body() -> int:
        server = await asyncio.start_unix_server(handle, path=str(ctl))
        async with server:
            return await asyncio.to_thread(cli.main, ["stats", "--control", str(ctl), *argv])
    return asyncio.run(body())


GOOD = {"requests": 3, "hits": 1, "per_op": {"READ": {"requests": 3, "hits": 1, "misses": 2,
                                                      "forwarded": 2}}}

BAD_REPLIES = [
    (b"not json\n", "not JSON"),
    (b"[1]\n", "a JSON list, not an object"),
    (b'"ok"\n', "a JSON str, not an object"),
    (b"\xff\n", "not UTF-8"),
    (b"[" * 60000 + b"\n", "nested too deep"),
    (b'{"ok": true}\n', 'no "stats" object'),
    (b'{"ok": true, "stats": [1]}\n', 'no "stats" object'),
    (b'{"ok": 1, "stats": {}}\n', '"ok" is 1, neither true nor false'),
    (b'{"stats": {}}\n', '"ok" is None'),
    (b'{"ok": false}\n', '"ok" is false, with no error message'),
    (b'{"ok": false, "error": 7}\n', '"ok" is false, with no error message'),
    (b'{"ok": true, "stats": {"per_op": []}}\n', '"per_op" is not an object'),
    (b'{"ok": true, "stats": {"per_op": {"\\u001b[2J": {}}}}\n',
     "\"per_op\" entry '\\x1b[2J' is not a printable name"),
    (b'{"ok": true, "stats": {"per_op": {"READ": 1}}}\n',
     "\"per_op\" entry 'READ' is not an object"),
    (b'{"ok": true, "stats": {"per_op": {"READ": {}}}}\n',
     "\"per_op\" entry 'READ' has no count 'requests'"),
    (b'{"ok": true, "stats": {"per_op": {"READ": {"requests": 1, "hits": "2", '
     b'"misses": 0, "forwarded": 0}}}}\n', "\"per_op\" entry 'READ' has no count 'hits'"),
    (b'{"ok": true, "stats": {"per_op": {"READ": {"requests": 1, "hits": 0, '
     b'"misses": null, "forwarded": 0}}}}\n', "has no count 'misses'"),
    (b'{"ok": true, "stats": {"per_op": {"READ": {"requests": 1, "hits": 0, '
     b'"misses": 0, "forwarded": true}}}}\n', "has no count 'forwarded'"),
]


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("reply,message", BAD_REPLIES)
def test_stats_reports_a_bad_reply_in_one_line(ctl: Path, reply: bytes, message: str,
                                               as_json: bool,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _stats_via(ctl, reply, ["--json"] if as_json else []) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("xenstore-cache: error: ")
    assert str(ctl) in err and "bad reply" in err and message in err, err


@pytest.mark.parametrize("reply,message", BAD_REPLIES)
def test_the_client_raises_a_typed_error_for_a_bad_reply(ctl: Path, reply: bytes,
                                                         message: str) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        w.write(reply)
        await w.drain()
        w.close()

    async def body() -> None:
        async with await asyncio.start_unix_server(handle, path=str(ctl)):
            with pytest.raises(ControlReplyError, match="bad reply") as err:
                await query_control(ctl)
            assert message in str(err.value) and str(ctl) in str(err.value)
    asyncio.run(body())


def test_a_refusal_gives_its_message_on_one_line(ctl: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    reply = json.dumps({"ok": False, "error": "no\nway\x1b[2J"}).encode() + b"\n"
    assert _stats_via(ctl, reply, []) == 1
    err = capsys.readouterr().err
    assert err == f"xenstore-cache: error: the xenstore-cache control socket at {ctl} " \
                  "refused: no\\nway\\x1b[2J\n"


def test_a_good_reply_is_printed(ctl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reply = json.dumps({"ok": True, "stats": GOOD}).encode() + b"\n"
    assert _stats_via(ctl, reply, []) == 0
    out = capsys.readouterr().out
    assert "READ                           3         1         2         2" in out
    assert _stats_via(ctl.with_name("ctl2"), reply, ["--json"]) == 0
    assert json.loads(capsys.readouterr().out) == GOOD


def test_stats_reports_a_socket_that_never_replies(ctl: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "query_control", functools.partial(query_control, timeout=0.2))
    assert _stats_via(ctl, None, []) == 1
    err = capsys.readouterr().err
    assert err == f"xenstore-cache: error: the xenstore-cache control socket at {ctl} " \
                  "did not reply within 0.2 s\n"


@pytest.mark.parametrize("exc", [TimeoutError(), ConnectionResetError(104, "reset by peer")])
def test_stats_reports_a_failure_of_the_client_itself(ctl: Path, exc: Exception,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    async def failing(path: Path) -> dict[str, object]:
        raise exc
    monkeypatch.setattr(cli, "query_control", failing)
    assert cli.main(["stats", "--control", str(ctl)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"xenstore-cache: error: cannot ask the xenstore-cache control "
                          f"socket at {ctl}: ") and err.count("\n") == 1


def test_no_socket_is_a_setup_error(ctl: Path) -> None:
    with pytest.raises(SetupError, match="no xenstore-cache control socket"):
        asyncio.run(query_control(ctl))
