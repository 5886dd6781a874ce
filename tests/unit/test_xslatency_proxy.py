"""The xenstored latency driver through the caching proxy (pure parts: the
servers' counters and the strace summaries faked)."""

from __future__ import annotations

from typing import Any

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.requests import XsLatencyRequest
from pyxen.lab.dom0 import xslatency

def figures(hits: int, fwd: int) -> dict[str, Any]:
    return {"us_median": 1.0, "proxy_hits": hits, "proxy_forwarded": fwd}


@pytest.mark.parametrize("op,hits,fwd", [("read", 100, 0), ("miss", 0, 100),
                                         ("write", 0, 100)])
def test_requests_that_measured_what_they_say_have_no_mismatch(op: xslatency.Op, hits: int,
                                                               fwd: int) -> None:
    assert xslatency.proxy_mismatch(figures(hits, fwd), op, 100, "here") is None
    # Without the proxy nothing is checked.
    assert xslatency.proxy_mismatch({"us_median": 1.0}, op, 100, "here") is None


@pytest.mark.parametrize("op,hits,fwd,message", [
    ("read", 99, 1, "here: of 100 reads the proxy answered 99 from its cache and forwarded 1"),
    ("miss", 1, 99, "here: of 100 misses the proxy answered 1 from its cache and forwarded 99"),
    ("write", 0, 99, "here: of 100 writes the proxy answered 0 from its cache and "
                     "forwarded 99"),
])
def test_a_read_not_hit_or_a_request_not_forwarded_is_named(op: xslatency.Op, hits: int,
                                                            fwd: int, message: str) -> None:
    assert xslatency.proxy_mismatch(figures(hits, fwd), op, 100, "here") == message


SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 50.00    0.000500           1       200           epoll_wait
 50.00    0.000500           1       400           read
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000           1       600           total
"""


def test_calls_are_given_per_request() -> None:
    assert xslatency._per_request(SUMMARY, 200) == {
        "per_read": {"epoll_wait": 1.0, "read": 2.0}, "total_per_read": 3.0}


def test_no_summary_from_an_attached_strace_is_no_system_call() -> None:
    # xenstored while the proxy answers every read: strace prints nothing.
    assert xslatency._per_request("", 200) == {"per_read": {}, "total_per_read": 0.0}
    with pytest.raises(ValueError, match="no strace -c summary"):
        xslatency._per_request("strace: attach: Operation not permitted\n", 200)


class _Xs:
    """Stands in for a libxenstore connection: a dict of nodes."""

    def __init__(self) -> None:
        self.store = {"/n": b"v"}
        self.removed: list[str] = []

    def read(self, path: str) -> bytes:
        return self.store[path]

    def write(self, path: str, value: bytes) -> None:
        self.store[path] = value

    def rm(self, path: str) -> None:
        self.removed.append(path)
        for p in [p for p in self.store if p == path or p.startswith(path + "/")]:
            del self.store[p]


def test_a_request_reads_or_writes_the_value() -> None:
    xs = _Xs()
    assert xslatency._request(xs, "read", "/n", b"v")    # type: ignore[arg-type]
    assert not xslatency._request(xs, "read", "/n", b"w")  # type: ignore[arg-type]
    assert xslatency._request(xs, "write", "/n", b"w")   # type: ignore[arg-type]
    assert xs.store["/n"] == b"w"
    with pytest.raises(ValueError, match="unknown request 'wirte'"):
        xslatency._request(xs, "wirte", "/n", b"w")   # type: ignore[arg-type]


def test_reads_and_writes_target_the_path_itself() -> None:
    xs = _Xs()
    with xslatency.targets(xs, "write", "/n", 3) as nodes:  # type: ignore[arg-type]
        assert nodes == [("/n", b"v")] * 3
    assert xs.removed == []


def test_misses_read_nodes_made_for_them_and_removed_after() -> None:
    xs = _Xs()
    with xslatency.targets(xs, "miss", "/n", 3) as nodes:  # type: ignore[arg-type]
        assert nodes == [(f"{protocol.XS_MISS_DIR}/{i}", b"%d" % i) for i in range(3)]
        assert all(xs.store[p] == v for p, v in nodes)
        assert len({p for p, _ in nodes}) == 3     # each read once: never a hit
    assert xs.removed == [protocol.XS_MISS_DIR] and set(xs.store) == {"/n"}


def test_misses_nodes_go_even_when_the_batch_fails() -> None:
    xs = _Xs()
    with pytest.raises(RuntimeError, match="boom"):
        with xslatency.targets(xs, "miss", "/n", 3):  # type: ignore[arg-type]
            raise RuntimeError("boom")
    assert set(xs.store) == {"/n"}


def test_a_miss_batch_is_bounded() -> None:
    with pytest.raises(ValueError, match="XsLatencyRequest.misses must be 0 or 10..5000"):
        XsLatencyRequest(misses=5001).check()
    with pytest.raises(ValueError, match="syscall_reads must be at most 5000 with misses"):
        XsLatencyRequest(misses=10, syscall_reads=6000).check()
