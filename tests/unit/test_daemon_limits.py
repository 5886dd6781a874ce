"""Daemons that hold a socket per client may open as many files as a host
of many guests needs: xenstored as the lab starts it, and the proxy."""

from __future__ import annotations

import logging
import resource
import shutil
from pathlib import Path

import pytest

from pyxen.lab.dom0 import agent
from xenstore_cache import cli


def test_the_lab_starts_xenstored_under_the_systems_file_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nr_open = tmp_path / "nr_open"
    nr_open.write_text("1048576\n")
    monkeypatch.setattr(agent, "NR_OPEN", nr_open)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert agent.xenstored_argv("/t/xenstored", "--pid-file", "/run/x.pid") == [
        "/usr/bin/prlimit", "--nofile=1048576", "/t/xenstored", "--pid-file", "/run/x.pid"]


def test_without_prlimit_the_lab_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"^prlimit \(util-linux\) not found"):
        agent.xenstored_argv("/t/xenstored")


def test_the_proxy_raises_its_file_limit_to_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"now": (1024, 524288)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])

    def setrlimit(which: int, value: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        limits["now"] = value
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert cli.raise_open_file_limit() == 524288
    assert limits["now"] == (524288, 524288)
    assert cli.raise_open_file_limit() == 524288       # already there: left alone


def test_a_limit_the_proxy_cannot_raise_is_kept_and_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))

    def refuse(which: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed to raise the maximum limit")
    monkeypatch.setattr(resource, "setrlimit", refuse)
    with caplog.at_level(logging.WARNING, logger="xenstore_cache"):
        assert cli.raise_open_file_limit() == 1024
    assert "could not raise the open-file limit from 1024 to 4096" in caplog.text
