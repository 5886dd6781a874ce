"""The shim's libxenctrl gate (shim.c, pyxen_xc_enter()): pyxen's libxenctrl
calls hold it shared and libxl's forks through pyxen_fork() exclusive, so no
child is forked while one of those calls holds a libxenctrl lock (stock's
toolstack does not hold them across fork(); the child would sleep for ever).
Run against the compiled shim, no Xen needed.  The threads are daemons and
every wait has a deadline: a broken gate fails a test, it does not hang the
run."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyxen import xenctrl
from pyxen._native import ffi, lib

DEADLINE_S = 10.0


def until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < deadline, f"no {what} after {DEADLINE_S} s"
        time.sleep(0.005)


def start(target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


class Holder:
    """A thread inside the gate until ``release()``."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.go = threading.Event()
        self.left = threading.Event()
        self.thread = start(self._run)
        assert self.inside.wait(DEADLINE_S)

    def _run(self) -> None:
        lib.pyxen_xc_enter()
        self.inside.set()
        self.go.wait(DEADLINE_S)
        self.left.set()
        lib.pyxen_xc_leave()

    def release(self) -> None:
        self.go.set()
        self.thread.join(DEADLINE_S)


class Fork:
    """A gated fork in a thread of its own (its child exits with 0 if the
    child's gate is free)."""

    def __init__(self) -> None:
        self.status: list[int] = []
        self.thread = start(lambda: self.status.append(lib.pyxen_gated_fork_probe()))

    def join(self) -> int:
        self.thread.join(DEADLINE_S)
        assert self.status, "the fork never ended"
        return self.status[0]


@pytest.fixture(autouse=True)
def gate_free() -> Iterator[None]:
    assert lib.pyxen_xc_gate_busy() == 0, "an earlier test left the gate held"
    yield


def test_a_fork_waits_for_a_call_inside_the_gate() -> None:
    holder = Holder()
    fork = Fork()
    until(lambda: lib.pyxen_xc_gate_fork_waiting() == 1, "fork waiting")
    time.sleep(0.1)
    assert fork.status == [], "the fork did not wait for the call"
    holder.release()
    assert fork.join() == 0
    assert lib.pyxen_xc_gate_busy() == 0


def test_a_call_waits_behind_a_waiting_fork() -> None:
    """Writers first: a stream of calls cannot keep a fork waiting."""
    holder = Holder()
    fork = Fork()
    until(lambda: lib.pyxen_xc_gate_fork_waiting() == 1, "fork waiting")
    second = Holder.__new__(Holder)     # started by hand: it must not get in yet
    second.inside, second.go, second.left = threading.Event(), threading.Event(), threading.Event()
    second.thread = start(second._run)
    assert not second.inside.wait(0.2), "a call got in ahead of the waiting fork"
    holder.release()
    assert fork.join() == 0
    assert second.inside.wait(DEADLINE_S)
    second.release()


def test_a_nested_enter_does_not_wait_behind_a_fork() -> None:
    """A call inside a call (a signal handler's) while a fork waits: a second
    shared hold would wait behind the fork, which waits for the first."""
    fork_waits = threading.Event()
    finished = threading.Event()
    busy: list[int] = []

    def nested() -> None:
        lib.pyxen_xc_enter()
        fork_waits.wait(DEADLINE_S)
        lib.pyxen_xc_enter()
        lib.pyxen_xc_leave()
        busy.append(lib.pyxen_xc_gate_busy())
        lib.pyxen_xc_leave()
        finished.set()

    start(nested)
    until(lambda: lib.pyxen_xc_gate_busy() == 1, "call inside the gate")
    fork = Fork()
    until(lambda: lib.pyxen_xc_gate_fork_waiting() == 1, "fork waiting")
    fork_waits.set()
    assert finished.wait(DEADLINE_S), "the nested enter waited behind the fork"
    assert busy == [1] and fork.join() == 0


def test_a_leave_without_an_enter_releases_nobody() -> None:
    lib.pyxen_xc_leave()                # an interrupt before the enter: the finally's leave
    holder = Holder()
    lib.pyxen_xc_leave()                # must not release the other thread's hold
    assert lib.pyxen_xc_gate_busy() == 1
    holder.release()
    assert lib.pyxen_xc_gate_busy() == 0


def test_a_fork_inside_the_gate_does_not_wait_for_itself() -> None:
    status: list[int] = []

    def call_that_forks() -> None:
        lib.pyxen_xc_enter()
        status.append(lib.pyxen_gated_fork_probe())
        lib.pyxen_xc_leave()

    start(call_that_forks).join(DEADLINE_S)
    assert status == [0]


def test_the_child_of_a_gated_fork_has_a_free_gate() -> None:
    assert Fork().join() == 0           # the probe's child exits 1 if not


def test_the_child_of_os_fork_has_a_free_gate() -> None:
    """A thread inside a libxenctrl call at os.fork(): the child, which does
    not have that thread, finds the gate free."""
    holder = Holder()
    pid = os.fork()
    if pid == 0:                        # the child: no test framework from here
        os._exit(lib.pyxen_xc_gate_busy() * 2 + lib.pyxen_xc_gate_fork_waiting())
    holder.release()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_xenctrls_calls_run_inside_the_gate() -> None:
    assert xenctrl._gated("pyxen_xc_gate_busy") == 1
    assert lib.pyxen_xc_gate_busy() == 0


def test_every_xenctrl_call_goes_through_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []

    def gated(function: str, *args: Any) -> Any:
        called.append(function)
        if function == "xc_interface_open":
            return ffi.cast("xc_interface *", 1)
        if function == "pyxen_scrub_get":
            args[4][0] = 0                # no node
        return 0

    monkeypatch.setattr(xenctrl, "_gated", gated)
    xc = xenctrl.XenCtrl()
    xc.pause(1)
    xc.domain_info(1)
    try:
        xc.scrub_state()
    except Exception:   # noqa: BLE001 - what the fake answers is beside the point
        pass
    xc.close()
    assert called[:3] == ["xc_interface_open", "xc_domain_pause", "xc_domain_getinfolist"]
    assert "pyxen_scrub_get" in called and called[-1] == "xc_interface_close"
