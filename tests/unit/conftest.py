"""Unit tests' shared fixtures."""

from __future__ import annotations

import pytest

from pyxen.lab.host import progress


@pytest.fixture(autouse=True)
def _own_step_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps a unit test runs (often with the work mocked away) go to a
    record of its own, not the run's list of real builds and boots."""
    monkeypatch.setattr(progress, "_FINISHED", [])
