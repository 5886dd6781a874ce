"""LibxlPool without a hypervisor: contexts are stand-ins that record who
uses them.  What matters: no two calls ever share a context, the number of
contexts follows the calls in flight (not the threads ever started), and
nothing stays open after close."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("pyxen._native", reason="pyxen._xen not built (pip install .)")

from pyxen import libxl  # noqa: E402
from pyxen.errors import LibxlError  # noqa: E402


class FakeCtx:
    opened: list[FakeCtx] = []
    fail_next = False
    # Contexts open at once (opened and not yet closed), and the most seen.
    alive = 0
    peak = 0
    _count_lock = threading.Lock()

    def __init__(self, xs_cache: bool = False) -> None:
        self.xs_cache = xs_cache
        if FakeCtx.fail_next:
            FakeCtx.fail_next = False
            raise LibxlError("libxl_ctx_alloc", -3, "ERROR_FAIL", None, "no xenstored")
        self.closed = False
        self.users = 0
        self.max_users = 0
        self._lock = threading.Lock()
        with FakeCtx._count_lock:
            FakeCtx.opened.append(self)
            FakeCtx.alive += 1
            FakeCtx.peak = max(FakeCtx.peak, FakeCtx.alive)

    def close(self) -> None:
        assert not self.closed, "context closed twice"
        self.closed = True
        with FakeCtx._count_lock:
            FakeCtx.alive -= 1

    def destroy(self, domid: int) -> None:
        assert not self.closed, "a closed context was used"
        with self._lock:
            self.users += 1
            self.max_users = max(self.max_users, self.users)
        time.sleep(0.002)
        with self._lock:
            self.users -= 1


@pytest.fixture
def pool(monkeypatch):
    FakeCtx.opened = []
    FakeCtx.alive = FakeCtx.peak = 0
    monkeypatch.setattr(libxl, "Libxl", FakeCtx)
    p = libxl.LibxlPool(max_idle=3)
    yield p
    p.close()


def test_a_context_is_never_used_by_two_calls_at_once(pool):
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(pool.destroy, range(1, 400)))
    assert FakeCtx.opened and all(c.max_users == 1 for c in FakeCtx.opened)
    # At most one context per call in flight.  (More than 8 may be opened in
    # all: with max_idle 3, contexts beyond it are closed and opened again.)
    assert FakeCtx.peak <= 8


def test_short_lived_threads_do_not_accumulate_contexts(pool):
    for batch in range(30):  # a new executor (new threads) per batch
        with ThreadPoolExecutor(2) as ex:
            list(ex.map(pool.destroy, range(1, 5)))
    assert len(FakeCtx.opened) <= 2
    assert pool.open_contexts <= 2


def test_idle_contexts_beyond_max_idle_are_closed(pool):
    gate = threading.Barrier(6)

    def call(_: int) -> None:
        with pool.lend():
            gate.wait(5)

    with ThreadPoolExecutor(6) as ex:
        list(ex.map(call, range(6)))
    assert len(FakeCtx.opened) == 6
    assert sum(not c.closed for c in FakeCtx.opened) == 3 == pool.open_contexts


def test_close_closes_idle_and_later_returned_contexts(pool):
    with pool.lend() as lent:
        pool.destroy(5)  # opens a second context, returned idle
        pool.close()
        assert [c.closed for c in FakeCtx.opened] == [False, True]
    assert lent.closed
    with pytest.raises(ValueError, match="closed"):
        pool.destroy(5)


def test_a_context_that_fails_to_open_is_reported_and_not_counted(pool):
    FakeCtx.fail_next = True
    with pytest.raises(LibxlError, match="no xenstored"):
        pool.destroy(1)
    assert pool.open_contexts == 0
    pool.destroy(1)
    assert pool.open_contexts == 1


def test_max_idle_must_be_positive():
    with pytest.raises(ValueError, match="max_idle"):
        libxl.LibxlPool(max_idle=0)


def test_the_pool_opens_contexts_with_the_cache_asked_for(monkeypatch):
    FakeCtx.opened = []
    monkeypatch.setattr(libxl, "Libxl", FakeCtx)
    monkeypatch.setattr(libxl, "xs_cache_supported", lambda: True)
    p = libxl.LibxlPool(xs_cache=True)
    p.destroy(1)
    p.close()
    assert FakeCtx.opened and all(c.xs_cache for c in FakeCtx.opened)
    # A libxl without LIBXL_CTX_XS_CACHE: a clear error, not a silent uncached pool.
    monkeypatch.setattr(libxl, "xs_cache_supported", lambda: False)
    with pytest.raises(ValueError, match="LIBXL_CTX_XS_CACHE"):
        libxl.LibxlPool(xs_cache=True)


def _in_child(check: Callable[[], str]) -> str:
    """``check()``'s answer (or its exception's repr) from a child made by
    os.fork() here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer and leave at once
        signal.alarm(10)  # a child hung on an inherited lock dies, answering nothing
        try:
            answer = check()
        except BaseException as exc:  # noqa: BLE001 (reported to the parent)
            answer = repr(exc)
        os.write(w, answer.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as out:
        answer = out.read()
    os.waitpid(pid, 0)
    return answer


def test_a_pool_from_before_a_fork_is_closed_in_the_child(monkeypatch):  # type: ignore[no-untyped-def]
    pool = libxl.LibxlPool()
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:  # another thread holds the pool's lock at the fork
        with pool._lock:
            held.set()
            release.wait()

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    try:
        def lend() -> str:
            with pool.lend():
                return "lent"
        # Neither a hang on the inherited lock nor the parent's contexts.
        assert "opened before os.fork()" in _in_child(lend)
    finally:
        release.set()
        t.join()
    assert pool.open_contexts == 0 and not pool._inherited  # the parent's is as it was


def test_every_handle_from_before_a_fork_is_closed_in_the_child() -> None:
    from pyxen import _native
    from pyxen.xenctrl import XenCtrl
    from pyxen.xenstore import XenStore

    # Stand-ins for open handles (nothing is called on them: the child must not).
    xs = XenStore.__new__(XenStore)
    xs._handle, xs._t, xs._in_forked_child = object(), 0, False
    xc = XenCtrl.__new__(XenCtrl)
    xc._h, xc._logger, xc._in_forked_child = object(), _native.ffi.NULL, False
    for h in (xs, xc):
        _native.track_for_fork(h)

    def use() -> str:
        answers = []
        for call in (lambda: xs.read("/local"), lambda: xc.handle):
            try:
                call()
                answers.append("worked")
            except ValueError as exc:
                answers.append(str(exc))
        xs.close()  # neither frees the parent's
        xc.close()
        return "\n".join(answers)

    answers = _in_child(use).split("\n")
    assert answers == [f"XenStore connection {_native.FORKED}",
                       f"XenCtrl handle {_native.FORKED}"], answers
    assert xs._handle is not None and xc._h is not None  # the parent's are as they were
    xs._handle = None  # not really open: nothing to close
    xc._h = None
