"""The xenstored latency driver's pool of idle connections (pure parts: no
xenstored, its descriptor count faked)."""

from __future__ import annotations

import pytest

from pyxen.lab.dom0 import xslatency


class _Conn:
    """Stands in for a libxenstore connection; xenstored "holds" it in FDS."""

    def __init__(self) -> None:
        _FDS.append(self)

    def get_domain_path(self, domid: int) -> str:
        return f"/local/domain/{domid}"

    def close(self) -> None:
        _CLOSED.append(self)


_FDS: list[_Conn] = []
_CLOSED: list[_Conn] = []


@pytest.fixture
def fake(monkeypatch):
    _FDS.clear()
    _CLOSED.clear()
    state = {"lag": 0}   # closed connections xenstored has not dropped yet

    def open_fds(pid: int) -> int:
        dropped = max(0, len(_CLOSED) - state["lag"])
        if state["lag"]:
            state["lag"] -= 1      # xenstored's loop gets to one per look
        return 3 + len(_FDS) - dropped

    monkeypatch.setattr(xslatency, "XenStore", _Conn)
    monkeypatch.setattr(xslatency, "open_fds", open_fds)
    monkeypatch.setattr(xslatency.time, "sleep", lambda s: None)
    return state


def test_shrinking_waits_until_xenstored_dropped_the_closed_connections(fake):
    pool = xslatency.IdlePool(pid=1)
    pool.resize(4)
    fake["lag"] = 3
    pool.resize(1)
    assert len(pool.handles) == 1 and len(_CLOSED) == 3
    assert fake["lag"] == 0        # it looked until xenstored caught up
    assert xslatency.open_fds(1) == 3 + 1


def test_connections_xenstored_never_drops_are_an_error_naming_them(fake, monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(xslatency.time, "monotonic", lambda: float(next(clock)))
    pool = xslatency.IdlePool(pid=1)
    pool.resize(2)
    fake["lag"] = 10**6
    with pytest.raises(RuntimeError, match="still holds 2 of the 2 connections closed"):
        pool.resize(0)


def test_close_does_not_wait_for_xenstored(fake):
    pool = xslatency.IdlePool(pid=1)
    pool.resize(3)
    fake["lag"] = 10**6
    pool.close()
    assert pool.handles == [] and len(_CLOSED) == 3
