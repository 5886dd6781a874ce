"""The Xenstore stub's console lines and preload lookup (pyxen.lab.dom0.xsstub),
without Xen: a console log written by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError
from pyxen.lab.dom0 import xsstub
from pyxen.lab.dom0.drivers import console_log


@pytest.fixture
def consoles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(protocol.ENV_CONSOLE_LOG_DIR, str(tmp_path))
    return tmp_path


def test_before_its_first_line_a_stub_has_not_started(consoles: Path) -> None:
    assert xsstub.started("stub0") is None
    assert xsstub.calls("stub0") == 0


def test_the_start_line_and_the_last_report_are_read(consoles: Path) -> None:
    console_log("stub0").write_text(
        "pyxen-tinyguest: up, nr_pages=4096\r\n"
        "pyxen-tinyguest: domctl version=24 first=0\r\n"
        "pyxen-tinyguest: domctl calls=34816 ok=20000\r\n"
        "pyxen-tinyguest: domctl calls=69632 ok=40000\r\n")
    assert xsstub.started("stub0") == xsstub.StubStart(version=24, first_rc=0)
    assert xsstub.calls("stub0") == 69632


def test_a_refused_stub_says_so(consoles: Path) -> None:
    console_log("stub1").write_text("pyxen-tinyguest: domctl version=24 first=-1\r\n")
    start = xsstub.started("stub1")
    assert start is not None and start.first_rc == -1


def test_without_the_preload_the_error_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(protocol.ENV_XS_DOMAIN_PRELOAD, str(tmp_path / "missing.so"))
    with pytest.raises(LabError, match=protocol.ENV_XS_DOMAIN_PRELOAD):
        xsstub.preload_path()
    monkeypatch.delenv(protocol.ENV_XS_DOMAIN_PRELOAD)
    with pytest.raises(LabError, match=protocol.XS_DOMAIN_PRELOAD):
        xsstub.preload_path()
