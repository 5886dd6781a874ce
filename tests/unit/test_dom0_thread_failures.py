"""dom0 code whose work runs in a thread or between a set-up and a
tear-down, when something raises that nobody expected: the xl lock
sampler, the xenstored latency run.  Each failure must be an error of the
run, with its result written (no partial figures passed off as whole).
The autoscale replay's are in test_autoscale_run.py, beside its fake driver."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.requests import XsLatencyRequest
from pyxen.lab.dom0 import xslatency, xstrace
from pyxen.lab.dom0.xllock import LockSampler

# -- xllock ------------------------------------------------------------------------


def dying_sampler(tmp_path: Path) -> LockSampler:
    """A sampler whose thread dies at its first look (no /proc/locks)."""
    (tmp_path / "xl").write_text("")
    return LockSampler(tmp_path / "xl", interval=0.01, proc_locks=tmp_path / "no-such-locks")


def test_a_sampler_that_died_raises_on_exit(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="xl lock sampler stopped early: FileNotFoundError"):
        with dying_sampler(tmp_path):
            time.sleep(0.1)


def test_a_sampler_that_died_does_not_hide_the_blocks_own_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the block's"):
        with dying_sampler(tmp_path):
            time.sleep(0.1)
            raise ValueError("the block's")


# -- xslatency -----------------------------------------------------------------------


class FakeXs:
    """A XenStore whose reads under /tool/ (the misses' nodes) return
    another value than the one written."""

    def __init__(self, *args: object) -> None:
        self.nodes = {"/local/domain/0/name": b"Domain-0"}

    def __enter__(self) -> FakeXs:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, path: str) -> bytes:
        return b"WRONG" if path.startswith("/tool/") else self.nodes[path]

    def write(self, path: str, value: bytes) -> None:
        self.nodes[path] = value

    def rm(self, path: str) -> None:
        return None

    def get_domain_path(self, domid: int) -> str:
        return "/local/domain/0"

    def close(self) -> None:
        return None


class FakeServers:
    xenstored = 1
    proxy = None
    proxy_pid = None

    @staticmethod
    def find() -> FakeServers:
        return FakeServers()

    def cpu_s(self) -> tuple[float, float | None]:
        return (0.0, None)

    def proxy_counts(self) -> None:
        return None


def test_a_miss_that_reads_another_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert protocol.XS_MISS_DIR.startswith("/tool/")
    monkeypatch.setattr(xslatency, "Servers", FakeServers)
    monkeypatch.setattr(xslatency, "XenStore", FakeXs)
    monkeypatch.setattr(xslatency, "xs_trace_off", contextlib.nullcontext)
    monkeypatch.setattr(xslatency, "open_fds", lambda pid: 10)
    r = xslatency.run(XsLatencyRequest(idle=(0,), reads=10, rounds=1, syscall_reads=0,
                                       misses=10))
    assert r["points"][0]["wrong_values"] == 0
    assert r["points"][0]["miss"]["wrong_values"] == 10
    assert r["errors"] == ["round 0, 0 idle: 10 misses returned another value"]


def test_a_trace_that_cannot_be_switched_off_is_an_error_with_a_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def set_xs_trace(on: bool) -> None:
        raise LabError("xenstore-control log off failed: no such file")

    monkeypatch.setattr(xslatency, "Servers", FakeServers)
    monkeypatch.setattr(xstrace, "set_xs_trace", set_xs_trace)
    monkeypatch.setenv(protocol.ENV_OUT, str(tmp_path))
    req = XsLatencyRequest(idle=(0,), reads=10, rounds=1)
    assert xslatency.main(["--request", req.to_json()]) == 1
    result = json.loads((tmp_path / protocol.RESULT_FILE).read_text())
    assert result["errors"] == ["LabError: xenstore-control log off failed: no such file"]
