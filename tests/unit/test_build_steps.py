"""A build step of the lab (pyxen.lab.host.xenbuild.run_logged) run and
stopped, with no Xen: what a stopped build leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pyxen.lab.contract.errors import BuildError
from pyxen.lab.host import xenbuild


class Stopped(Exception):
    pass


def _alive(tag: str) -> bool:
    return subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 0


def test_a_stopped_step_takes_its_whole_process_group_with_it(tmp_path: Path) -> None:
    # make's compilers are its children: stopping the lab must not leave
    # them writing into the build directory that the next run reuses.
    tag = f"{time.time_ns() % 10**9}.5"
    script = f"sleep {tag} & sleep {tag}; wait"

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Stopped):
            xenbuild.run_logged("sleepers", ["sh", "-c", script], tmp_path,
                                 tmp_path / "build.log")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    deadline = time.monotonic() + 5
    while _alive(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(tag), "a child of the stopped step is still running"


def test_a_failed_step_names_itself_and_keeps_the_log_tail(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as exc:
        xenbuild.run_logged("configure", ["sh", "-c", "echo no compiler >&2; exit 3"],
                             tmp_path, tmp_path / "build.log")
    assert "configure" in str(exc.value)
    assert "no compiler" in str(exc.value)
    assert os.fspath(tmp_path / "build.log") in str(exc.value)
