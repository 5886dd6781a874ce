"""The lab's record of its long steps (builds, boots): what a slow run's
summary lists with their times.  Each test starts with an empty record
(tests/unit/conftest.py)."""

from __future__ import annotations

import pytest

from pyxen.lab.host import progress


def test_a_finished_step_is_recorded_with_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 103.5])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress.step("building xen"):
        pass
    progress.record_step("boot of 'patched'", 61.25)
    assert progress.finished_steps() == [("building xen", 3.5), ("boot of 'patched'", 61.25)]


def test_a_failed_step_is_not_recorded_as_done() -> None:
    with pytest.raises(RuntimeError), progress.step("building tools"):
        raise RuntimeError("compiler gone")
    assert progress.finished_steps() == []


def test_the_record_given_out_is_a_copy() -> None:
    progress.record_step("x", 1.0)
    progress.finished_steps().clear()
    assert progress.finished_steps() == [("x", 1.0)]


def test_a_message_is_printed_as_written_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A long path stays whole on one line (rich would wrap it at 80
    columns in a log), and brackets in it are not taken for markup."""
    path = "/tmp/" + "d" * 150 + "/[bold]run[/bold]/bench.failed.json"
    progress.say(f"wrote the failures to {path} (the earlier one is kept)")
    assert capsys.readouterr().err == f"wrote the failures to {path} (the earlier one is kept)\n"
