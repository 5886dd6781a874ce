"""Libxl.destroy's retry without a hypervisor: libxl_domain_destroy is a
stand-in whose outcomes a test scripts.  A destroy is repeated only when
its destroyer child was found deadlocked (the shim's counter moved), at
most ``_DESTROY_ATTEMPTS`` times; any other failure is raised at once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

pytest.importorskip("pyxen._native", reason="pyxen._xen not built (pip install .)")

from pyxen import libxl  # noqa: E402
from pyxen._native import ffi  # noqa: E402
from pyxen._native import lib as real_lib  # noqa: E402
from pyxen.errors import DomainNotFound, LibxlError  # noqa: E402


class ScriptedLib:
    """The real cffi lib, but libxl_domain_destroy plays ``outcomes`` in
    turn: "ok", "fail" (ERROR_FAIL), "deadlock" (ERROR_FAIL after the shim
    killed a deadlocked child) or "gone" (ERROR_DOMAIN_NOTFOUND)."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.deadlocks = 0

    def libxl_domain_destroy(self, ctx: Any, domid: int, how: Any) -> int:
        outcome = self.outcomes[self.calls]
        self.calls += 1
        if outcome == "deadlock":
            self.deadlocks += 1
        codes: dict[str, int] = {"ok": 0, "fail": real_lib.ERROR_FAIL,
                                 "deadlock": real_lib.ERROR_FAIL,
                                 "gone": real_lib.ERROR_DOMAIN_NOTFOUND}
        return codes[outcome]

    def pyxen_deadlocked_children(self) -> int:
        return self.deadlocks

    def __getattr__(self, name: str) -> Any:
        return getattr(real_lib, name)


def scripted(monkeypatch: pytest.MonkeyPatch, outcomes: list[str]) -> tuple[libxl.Libxl, ScriptedLib]:
    fake = ScriptedLib(outcomes)
    monkeypatch.setattr(libxl, "lib", fake)
    xl = libxl.Libxl.__new__(libxl.Libxl)   # no context: the stand-in needs none
    xl._logger = ffi.NULL
    xl._h = ffi.NULL          # what .ctx hands the stand-in
    return xl, fake


def test_a_destroy_is_repeated_while_its_children_deadlock(monkeypatch, caplog):  # type: ignore[no-untyped-def]
    attempts = libxl._DESTROY_ATTEMPTS
    xl, fake = scripted(monkeypatch, ["deadlock"] * (attempts - 1) + ["ok"])
    with caplog.at_level(logging.WARNING, logger="pyxen.libxl"):
        xl.destroy(7)
    assert fake.calls == attempts
    assert len([r for r in caplog.records if "destroying again" in r.message]) == attempts - 1


def test_the_last_deadlocked_attempt_is_raised(monkeypatch):  # type: ignore[no-untyped-def]
    attempts = libxl._DESTROY_ATTEMPTS
    xl, fake = scripted(monkeypatch, ["deadlock"] * (attempts + 1))
    with pytest.raises(LibxlError) as e:
        xl.destroy(7)
    assert fake.calls == attempts, "tried more (or fewer) times than the bound"
    assert e.value.errno is None and "ERROR_FAIL" in str(e.value)


def test_a_failure_without_a_deadlock_is_raised_at_once(monkeypatch):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, ["fail", "ok"])
    with pytest.raises(LibxlError):
        xl.destroy(7)
    assert fake.calls == 1


def test_a_domain_gone_after_a_deadlocked_attempt_counts_as_destroyed(monkeypatch):  # type: ignore[no-untyped-def]
    # The killed child may have issued the destroydomain before it hung.
    xl, fake = scripted(monkeypatch, ["deadlock", "gone"])
    xl.destroy(7)
    assert fake.calls == 2


def test_a_domain_missing_at_the_first_attempt_is_not_found(monkeypatch):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, ["gone"])
    with pytest.raises(DomainNotFound):
        xl.destroy(7)
    assert fake.calls == 1


@pytest.mark.parametrize("domid", [0, -1, True, 1.0])
def test_a_destroy_of_no_guest_is_refused_before_libxl(monkeypatch, domid):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, [])
    with pytest.raises(ValueError, match="domid"):
        xl.destroy(domid)
    assert fake.calls == 0
