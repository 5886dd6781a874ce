"""Dom0.start: a boot that hangs is tried again once, a failing one is not."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.lab.contract.errors import BootError, BootTimeout
from pyxen.lab.host import vm
from pyxen.lab.host.vm_options import VMOptions


def make_vm(tmp_path: Path, outcomes: list[BaseException | None],
            monkeypatch: pytest.MonkeyPatch) -> tuple[vm.Dom0, list[int]]:
    """A Dom0 whose single boot attempts end as ``outcomes`` say (None: up)."""
    build: Any = SimpleNamespace(variant=SimpleNamespace(name="stock"))
    dom0 = vm.Dom0(build, VMOptions(), run_dir=tmp_path / "run")
    attempts: list[int] = []

    def start_once() -> None:
        attempts.append(len(attempts) + 1)
        dom0.run_dir.mkdir(parents=True, exist_ok=True)
        (dom0.run_dir / "serial.log").write_text(f"attempt {len(attempts)}\n")
        outcome = outcomes[len(attempts) - 1]
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(dom0, "_start_once", start_once)
    monkeypatch.setattr(dom0, "kill", lambda: None)
    return dom0, attempts


def test_a_hung_boot_is_tried_again_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    dom0, attempts = make_vm(tmp_path, [BootTimeout("dom0 not up after 300 s", ""), None],
                             monkeypatch)
    with caplog.at_level(logging.WARNING):
        dom0.start()
    assert attempts == [1, 2]
    assert (tmp_path / "run" / "serial.log").read_text() == "attempt 2\n"
    assert (tmp_path / "run-hung1" / "serial.log").read_text() == "attempt 1\n"
    assert "booting again" in caplog.text and "run-hung1" in caplog.text


def test_a_boot_that_keeps_hanging_is_reported(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    hangs: list[BaseException | None] = [BootTimeout(f"hang {i}", "") for i in (1, 2)]
    dom0, attempts = make_vm(tmp_path, hangs, monkeypatch)
    with pytest.raises(BootTimeout, match="hang 2"):
        dom0.start()
    assert attempts == [1, 2] and vm.BOOT_ATTEMPTS == 2


def test_a_failed_boot_is_not_tried_again(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    dom0, attempts = make_vm(tmp_path, [BootError("QEMU exited with status 1", ""), None],
                             monkeypatch)
    with pytest.raises(BootError, match="QEMU exited"):
        dom0.start()
    assert attempts == [1]
