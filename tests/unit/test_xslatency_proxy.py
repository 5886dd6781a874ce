"""The xenstored latency driver through the caching proxy (pure parts: the
servers' counters and the strace summaries faked)."""

from __future__ import annotations

from typing import Any

import pytest

from pyxen.lab.contract.requests import XsLatencyRequest
from pyxen.lab.dom0 import xslatency

REQ = XsLatencyRequest(idle=(0,), reads=100, rounds=1, writes=50)


def point(hits: int, fwd: int, w_hits: int, w_fwd: int) -> dict[str, Any]:
    return {"proxy_hits": hits, "proxy_forwarded": fwd,
            "write": {"proxy_hits": w_hits, "proxy_forwarded": w_fwd}}


def test_a_point_that_measured_what_it_says_has_no_mismatch() -> None:
    assert xslatency._proxy_mismatches(point(100, 0, 0, 50), REQ, "here") == []
    # Without the proxy nothing is checked.
    assert xslatency._proxy_mismatches({"us_median": 1.0}, REQ, "here") == []


@pytest.mark.parametrize("p,message", [
    (point(99, 1, 0, 50), "here: the proxy answered 99 of 100 reads from its cache and "
                          "forwarded 1"),
    (point(100, 0, 1, 49), "here: the proxy forwarded 49 of 50 writes and answered 1"),
])
def test_a_read_not_hit_or_a_write_not_forwarded_is_named(p: dict[str, Any],
                                                          message: str) -> None:
    assert xslatency._proxy_mismatches(p, REQ, "here") == [message]


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


def test_a_request_reads_or_writes_the_value() -> None:
    class Xs:
        def __init__(self) -> None:
            self.store = {"/n": b"v"}

        def read(self, path: str) -> bytes:
            return self.store[path]

        def write(self, path: str, value: bytes) -> None:
            self.store[path] = value

    xs = Xs()
    assert xslatency._request(xs, "read", "/n", b"v")    # type: ignore[arg-type]
    assert not xslatency._request(xs, "read", "/n", b"w")  # type: ignore[arg-type]
    assert xslatency._request(xs, "write", "/n", b"w")   # type: ignore[arg-type]
    assert xs.store["/n"] == b"w"
