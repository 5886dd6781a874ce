"""The shim's libxenctrl gate (shim.c, pyxen_xc_enter()): pyxen's libxenctrl
calls hold it shared and libxl's forks through pyxen_fork() exclusive, so no
child is forked while one of those calls holds a libxenctrl lock (stock's
toolstack does not hold them across fork(); the child would sleep for ever).
Run against the compiled shim, no Xen needed."""

from __future__ import annotations

import threading
import time

from pyxen import xenctrl
from pyxen._native import ffi, lib

HOLD_S = 0.3


def forked_in_thread() -> tuple[threading.Thread, list[float]]:
    """A gated fork in a thread of its own: its thread, and when it ended."""
    done: list[float] = []

    def fork() -> None:
        assert lib.pyxen_gated_fork_probe() == 0
        done.append(time.monotonic())

    t = threading.Thread(target=fork, daemon=True)
    t.start()
    return t, done


def test_a_fork_waits_for_a_call_inside_the_gate() -> None:
    inside = threading.Event()
    left: list[float] = []

    def call() -> None:
        lib.pyxen_xc_enter()
        inside.set()
        time.sleep(HOLD_S)
        left.append(time.monotonic())
        lib.pyxen_xc_leave()

    caller = threading.Thread(target=call)
    caller.start()
    assert inside.wait(5)
    t, done = forked_in_thread()
    t.join(10)
    caller.join(10)
    assert done and left and done[0] >= left[0]


def test_a_call_waits_for_a_fork_waiting_for_the_gate() -> None:
    """Writers first: a fork waiting behind one call holds off the next, so a
    stream of calls cannot keep it waiting."""
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        lib.pyxen_xc_enter()
        inside.set()
        time.sleep(HOLD_S)
        order.append("first left")
        lib.pyxen_xc_leave()

    def second() -> None:
        lib.pyxen_xc_enter()
        order.append("second in")
        lib.pyxen_xc_leave()

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(5)
    t, done = forked_in_thread()
    time.sleep(HOLD_S / 3)              # the fork is waiting for the gate
    b = threading.Thread(target=second)
    b.start()
    for th in (a, t, b):
        th.join(10)
    assert done and order == ["first left", "second in"]


def test_nested_enters_take_the_gate_once() -> None:
    """A call inside a call (a signal handler's) while a fork waits for the
    gate: a second read lock would wait behind the fork, which waits for the
    first, for ever."""
    inside = threading.Event()
    finished = threading.Event()
    busy: list[int] = []

    def nested() -> None:
        lib.pyxen_xc_enter()
        inside.set()
        time.sleep(HOLD_S)                  # meanwhile the fork waits for the gate
        lib.pyxen_xc_enter()
        lib.pyxen_xc_leave()
        busy.append(lib.pyxen_xc_gate_busy())
        lib.pyxen_xc_leave()
        finished.set()

    n = threading.Thread(target=nested, daemon=True)
    n.start()
    assert inside.wait(5)
    t, done = forked_in_thread()
    assert finished.wait(10), "the nested enter waited behind the fork"
    t.join(10)
    assert done and busy == [1]
    assert lib.pyxen_xc_gate_busy() == 0


def test_a_leave_without_an_enter_changes_nothing() -> None:
    lib.pyxen_xc_leave()                # an interrupt before the enter: the finally's leave
    other = threading.Event()
    release = threading.Event()

    def holder() -> None:
        lib.pyxen_xc_enter()
        other.set()
        release.wait(5)
        lib.pyxen_xc_leave()

    h = threading.Thread(target=holder)
    h.start()
    assert other.wait(5)
    lib.pyxen_xc_leave()                # must not release the other thread's hold
    assert lib.pyxen_xc_gate_busy() == 1
    release.set()
    h.join(10)
    assert lib.pyxen_xc_gate_busy() == 0


def test_leaving_keeps_the_calls_errno() -> None:
    ffi.errno = 3                       # ESRCH, as a failed call leaves it
    lib.pyxen_xc_enter()
    lib.pyxen_xc_leave()
    assert ffi.errno == 3


def test_xenctrls_calls_run_inside_the_gate() -> None:
    assert lib.pyxen_xc_gate_busy() == 0
    assert xenctrl._gated("pyxen_xc_gate_busy") == 1
    assert lib.pyxen_xc_gate_busy() == 0
