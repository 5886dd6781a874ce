"""The test harness's own helpers (tests/conftest.py): how a suite run in
dom0 is read back (passes, and skips other than scheduled-only ones), and how
long tests with a length run in CI, scheduled and developers' runs."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from pyxen.lab.contract import protocol

XEN_TESTS = Path(__file__).resolve().parents[1] / "xen"

SUMMARY_TAIL = """\
=========================== short test summary info ============================
{skips}
{summary}
"""
SCHEDULED_SKIP = ("SKIPPED [1] tests/xen/test_autoballoon.py:128: scheduled runs only "
                  "(--scheduled or PYXEN_SCHEDULED=1)")


def test_a_scheduled_only_skip_is_expected_unless_the_run_is_scheduled(
        suite_outcome: Callable[[str], tuple[int, list[str]]],
        scheduled_run: bool) -> None:
    out = "...s\n" + SUMMARY_TAIL.format(skips=SCHEDULED_SKIP,
                                       summary="5 passed, 1 skipped in 111.38s (0:01:51)")
    # A scheduled run passes --scheduled to dom0: there nothing may skip.
    odd = [SCHEDULED_SKIP.split("] ", 1)[1]] if scheduled_run else []
    assert suite_outcome(out) == (5, odd)


def test_any_other_skip_is_reported(suite_outcome: Callable[[str], tuple[int, list[str]]],
                                    scheduled_run: bool) -> None:
    other = "SKIPPED [2] tests/xen/test_scrub.py:40: needs 2 NUMA nodes"
    out = SUMMARY_TAIL.format(skips=f"{SCHEDULED_SKIP}\n{other}",
                              summary="43 passed, 3 skipped, 24 deselected in 534.79s")
    passed, odd = suite_outcome(out)
    assert passed == 43 and "tests/xen/test_scrub.py:40: needs 2 NUMA nodes" in odd
    assert len(odd) == (2 if scheduled_run else 1)


def test_a_skip_counted_but_not_listed_is_reported(
        suite_outcome: Callable[[str], tuple[int, list[str]]]) -> None:
    passed, odd = suite_outcome("43 passed, 2 skipped, 24 deselected in 534.79s (0:08:54)\n")
    assert passed == 43 and odd == ["2 skipped without a reason listed (run with -rs)"]


def test_no_summary_is_no_pass(suite_outcome: Callable[[str], tuple[int, list[str]]]) -> None:
    assert suite_outcome("Traceback (most recent call last):\n  ...\n") == (0, [])
    # A number on a line that is not pytest's summary is not a count.
    assert suite_outcome("created 12 passed guests in 3.5s of waiting\nKilled\n")[0] == 0


def test_the_last_summary_counts(suite_outcome: Callable[[str], tuple[int, list[str]]]) -> None:
    out = "1 passed in 0.10s\n(a nested run's output)\n3 passed, 1 failed in 9.00s\n"
    assert suite_outcome(out) == (3, [])


#: A length the in-dom0 runner forwards (any of them does for these tests).
LENGTH = protocol.ENV_RUN_LENGTHS[0]


def test_run_length_follows_the_variable_then_the_kind_of_run(
        run_length: Callable[..., int], scheduled_run: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lengths = {"ci": 24, "scheduled": 48, "default": 200}
    monkeypatch.setenv(LENGTH, "7")
    assert run_length(LENGTH, **lengths) == 7
    monkeypatch.delenv(LENGTH)
    monkeypatch.setenv("CI", "true")
    assert run_length(LENGTH, **lengths) == (48 if scheduled_run else 24)
    monkeypatch.delenv("CI")
    assert run_length(LENGTH, **lengths) == (48 if scheduled_run else 200)


@pytest.mark.parametrize("value", ["many", "0", "-3", ""])
def test_a_bad_length_is_a_usage_error(run_length: Callable[..., int], value: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LENGTH, value)
    with pytest.raises(pytest.UsageError, match=LENGTH):
        run_length(LENGTH, ci=1, scheduled=2, default=3)


def test_a_length_the_runner_does_not_forward_is_a_usage_error(
        run_length: Callable[..., int], monkeypatch: pytest.MonkeyPatch) -> None:
    # Set on the host, it would never reach the tests in dom0.
    monkeypatch.setenv("PYXEN_UNFORWARDED_CYCLES", "5")
    with pytest.raises(pytest.UsageError, match="PYXEN_UNFORWARDED_CYCLES.*ENV_RUN_LENGTHS"):
        run_length("PYXEN_UNFORWARDED_CYCLES", ci=1, scheduled=2, default=3)


def _run_length_names(source: str) -> set[str]:
    """The variable names in every ``run_length("NAME", ...)`` call."""
    return {node.args[0].value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "run_length" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}


def test_the_dom0_tests_read_only_lengths_the_runner_forwards() -> None:
    # The runtime check above fires only in dom0; this one in every run.
    names: set[str] = set()
    for f in sorted(XEN_TESTS.glob("test_*.py")):
        names |= _run_length_names(f.read_text())
    assert names, "no run_length() call found: the scan is broken"
    assert names <= set(protocol.ENV_RUN_LENGTHS), names - set(protocol.ENV_RUN_LENGTHS)
    assert _run_length_names('run_length("PYXEN_X", ci=1)') == {"PYXEN_X"}


def test_passes_are_counted_by_module(module_passes: Callable[[str, str], int]) -> None:
    out = ("PASSED ../work/repo/tests/xen/test_scrub.py::test_a\n"
           "PASSED tests/xen/test_scrub.py::TestBusy::test_b[x]\n"
           "PASSED ../work/repo/tests/xen/test_notscrub.py::test_c\n"
           "FAILED ../work/repo/tests/xen/test_scrub.py::test_d - boom\n"
           "  PASSED test_scrub.py::test_e (not a summary line)\n")
    assert module_passes(out, "test_scrub.py") == 2
    assert module_passes(out, "test_notscrub.py") == 1
    assert module_passes(out, "test_stress.py") == 0
