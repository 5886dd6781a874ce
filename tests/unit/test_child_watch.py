"""The reaper's watch on libxl's forked children (shim.c, pyxen_watch_child):
a child that sleeps for ever on a lock it inherited locked is killed and
counted; a child that merely takes its time is left alone."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

_native = pytest.importorskip("pyxen._native", reason="pyxen._xen not built (pip install .)")

from pyxen.libxl import deadlocked_children  # noqa: E402

lib = _native.lib


def _fork(child) -> int:  # type: ignore[no-untyped-def]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            child()
        finally:
            os._exit(0)
    return pid


def test_a_child_blocked_on_an_inherited_lock_is_killed_and_counted():
    held = threading.Lock()
    held.acquire()  # locked at fork: in the child, nobody will release it
    try:
        pid = _fork(held.acquire)
    finally:
        held.release()
    before = deadlocked_children()
    t0 = time.monotonic()
    lib.pyxen_watch_child(pid)
    elapsed = time.monotonic() - t0
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert deadlocked_children() == before + 1
    assert elapsed < 10


def test_a_slow_child_that_exits_is_not_touched():
    pid = _fork(lambda: time.sleep(1.6))
    before = deadlocked_children()
    lib.pyxen_watch_child(pid)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert deadlocked_children() == before
