"""The reaper's watch on libxl's forked children (shim.c, pyxen_watch_child):
a child that sleeps for ever on a lock it inherited locked is killed and
counted; a child that merely takes its time is left alone, and so is a child
that has exec'd (a hotplug script, the bootloader), whatever it waits on."""

from __future__ import annotations

import os
import shutil
import signal
import sys
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


# Run after an exec: waits in futex() (a lock acquired twice, with a timeout),
# as a multithreaded program may, then exits 0.
_WAITS_IN_FUTEX = ("import _thread, os; lock = _thread.allocate_lock(); lock.acquire(); "
                   "os.write({fd}, b'r'); lock.acquire(timeout={secs})")


def _exec_child(exe: str, secs: float) -> int:
    """A child that execs Python (``exe``) to run _WAITS_IN_FUTEX; returns
    once the new program runs."""
    r, w = os.pipe()
    os.set_inheritable(w, True)
    env = dict(os.environ, PYTHONHOME=sys.base_prefix)
    argv = [exe, "-I", "-S", "-c", _WAITS_IN_FUTEX.format(fd=w, secs=secs)]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            os.execve(exe, argv, env)
        finally:
            os._exit(127)
    os.close(w)
    try:
        assert os.read(r, 1) == b"r", "the exec'd child did not start"
    finally:
        os.close(r)
    return pid


@pytest.fixture
def other_python(tmp_path):
    """This Python's binary as another file (another inode): another program."""
    copy = tmp_path / "other-python"
    shutil.copy2(os.path.realpath("/proc/self/exe"), copy)
    return str(copy)


def test_a_forked_child_is_unexeced_until_it_execs(other_python):
    pid = _fork(lambda: time.sleep(2))
    try:
        assert lib.pyxen_child_unexeced(pid) == 1
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    for exe in (other_python, sys.executable):
        pid = _exec_child(exe, 10)
        try:
            assert lib.pyxen_child_unexeced(pid) == 0, exe
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    # Gone (reaped): no doubt is a yes.
    assert lib.pyxen_child_unexeced(pid) == 0


@pytest.mark.parametrize("which", ["another program", "this same program"])
def test_a_child_that_execd_is_not_killed_while_it_waits_in_futex(which, other_python):
    """pygrub is a Python script: exec'd under this very interpreter, its exe
    is ours, and only its fresh auxiliary vector tells it apart."""
    exe = other_python if which == "another program" else sys.executable
    pid = _exec_child(exe, 2.5)  # in futex() at every sample, for 5 of them
    before = deadlocked_children()
    lib.pyxen_watch_child(pid)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert deadlocked_children() == before
