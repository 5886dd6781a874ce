"""Shared pytest configuration: Hypothesis profiles and where Xen tests run.

Tests marked ``xen`` need a Xen dom0.  With ``--xen lab`` (the default) they
are not run here: tests/nested/test_in_dom0.py boots the nested lab and runs
them inside its dom0, once per variant.  With ``--xen host`` they run in this
process, which must be the dom0 of a real Xen host (root); they only touch
domains they create (names starting with ``pxt``).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.args import positive_int

_profiles_loaded = False


def _load_hypothesis_profiles() -> None:
    """Hypothesis's profiles: CI keeps example counts small for its time
    budget; "soak" is for long runs.  Loaded before the first test module
    that uses Hypothesis is imported (``pytest_collectstart``), not
    here: a run whose tests do not use it (the autoballoon suite in the
    lab's dom0, the scrub suite's scheduled run) is spared importing it,
    11 s of a 2-pCPU lab's time under TCG, 30 s or more on a machine 3x
    slower."""
    global _profiles_loaded
    if _profiles_loaded:
        return
    from hypothesis import HealthCheck, settings
    settings.register_profile("ci", max_examples=50, deadline=None)
    settings.register_profile("dev", max_examples=100, deadline=None)
    settings.register_profile("soak", max_examples=5000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                         "ci" if os.environ.get("CI") else "dev"))
    _profiles_loaded = True


def pytest_collectstart(collector: pytest.Collector) -> None:
    # A test module's collection starts before it is imported.
    if (not _profiles_loaded and isinstance(collector, pytest.Module)
            and "hypothesis" in collector.path.read_text(errors="replace")):
        _load_hypothesis_profiles()


#: The reason of a skip for a test marked ``scheduled`` in a run that is not
#: (the nested runners accept only these skips from a suite run in dom0).
SCHEDULED_ONLY = "scheduled runs only"


_SKIP_LINE = re.compile(r"^SKIPPED \[(\d+)\] (.*)$", re.M)
#: pytest's last line: "5 passed, 1 skipped, 24 deselected in 111.38s (0:01:51)".
_SUMMARY = re.compile(r"^=*\s*(\d+ \w+(?:, \d+ \w+)*) in \d+(?:\.\d+)?s\b", re.M)


@pytest.fixture(scope="session")
def scheduled_run(pytestconfig: pytest.Config) -> bool:
    """Whether this is a scheduled run (``--scheduled`` or PYXEN_SCHEDULED=1):
    the tests marked ``scheduled`` run, and tests with a length run their
    scheduled length."""
    return bool(pytestconfig.getoption("--scheduled"))


@pytest.fixture(scope="session")
def suite_outcome(scheduled_run: bool) -> Callable[[str], tuple[int, list[str]]]:
    """Reads a pytest run's output (run with ``-rs`` or ``-rfEs``, so that it
    lists its skips): returns how many tests passed and the skips it should
    not have had, each line as printed (a skip counted but not listed is
    reported too).  In a run that is not scheduled a scheduled-only test's
    skip is expected; in a scheduled run (which passes ``--scheduled`` on)
    no skip is."""

    def outcome(output: str) -> tuple[int, list[str]]:
        summaries = _SUMMARY.findall(output)
        counts = {what: int(n) for n, what in
                  (part.split(" ", 1) for part in (summaries[-1] if summaries else "").split(", ")
                   if part)}
        odd, listed = [], 0
        for n, line in _SKIP_LINE.findall(output):
            listed += int(n)
            if scheduled_run or SCHEDULED_ONLY not in line:
                odd.append(line)
        unlisted = counts.get("skipped", 0) - listed
        if unlisted > 0:
            odd.append(f"{unlisted} skipped without a reason listed (run with -rs)")
        return counts.get("passed", 0), odd
    return outcome


@pytest.fixture(scope="session")
def module_passes() -> Callable[[str, str], int]:
    """``module_passes(output, "test_x.py")``: how many tests of that module
    a pytest run that listed its passes (``-rp``) passed.  Node IDs are as
    the run printed them, relative to its working directory (in the lab's
    dom0 ``../<repo>/tests/xen/test_x.py::test_y``)."""
    def count(output: str, module: str) -> int:
        return len(re.findall(rf"^PASSED (?:\S*/)?{re.escape(module)}::", output, re.M))
    return count


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--xen", choices=("lab", "host"), default="lab",
        help="where tests marked 'xen' run: 'lab' (default) boots nested Xen and runs "
             "them in its dom0; 'host' runs them here, in the dom0 of a real Xen host")
    parser.addoption(
        "--scheduled", action="store_true",
        default=os.environ.get("PYXEN_SCHEDULED") == "1",
        help="also run tests marked 'scheduled' (stock Xen's suites, boots that "
             "repeat what another covers, cases that repeat another's with other "
             "timing: for scheduled runs, not every CI run; or PYXEN_SCHEDULED=1), "
             "and tests with a length (cycles, examples) at their scheduled length")


@pytest.fixture(scope="session")
def run_length(scheduled_run: bool) -> Callable[..., int]:
    """How long a test that can run longer or shorter runs (cycles, examples,
    rounds): ``run_length(ENV_VAR, ci=N, scheduled=M, default=K)`` is the
    variable's value if set, else *ci* in a CI run (``CI`` set) that is not
    scheduled, *scheduled* in a scheduled run (``--scheduled``: no 30-minute
    budget, but the in-dom0 runner's own time limit), *default* otherwise
    (a developer's run).  Soak runs set the variable; a value that is not a
    whole number of at least 1 fails the test that reads it, naming the
    variable.  The variable must be one of ``protocol.ENV_RUN_LENGTHS``,
    the ones the in-dom0 runner forwards from the host."""

    def length(env_var: str, *, ci: int, scheduled: int, default: int) -> int:
        if env_var not in protocol.ENV_RUN_LENGTHS:
            raise pytest.UsageError(
                f"run_length({env_var!r}): not in pyxen.lab.contract.protocol."
                "ENV_RUN_LENGTHS, so the in-dom0 runner would not forward it")
        value = os.environ.get(env_var)
        if value is not None:
            try:
                return positive_int(value)
            except argparse.ArgumentTypeError as exc:
                raise pytest.UsageError(f"{env_var}={value!r}: {exc}") from None
        if scheduled_run:
            return scheduled
        return ci if os.environ.get("CI") else default
    return length


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--scheduled"):
        later = pytest.mark.skip(reason=f"{SCHEDULED_ONLY} (--scheduled or "
                                        "PYXEN_SCHEDULED=1)")
        for item in items:
            if "scheduled" in item.keywords:
                item.add_marker(later)
    if config.getoption("--xen") == "host":
        return
    def skip(runner: str) -> pytest.MarkDecorator:
        return pytest.mark.skip(reason=f"runs inside the lab's dom0 (tests/nested/{runner}); "
                                       "use --xen host in a real dom0")

    for item in items:
        if "scrub" in item.keywords:
            item.add_marker(skip("test_in_dom0.py, in the shared boot of two NUMA nodes"))
        elif "autoballoon" in item.keywords:
            item.add_marker(skip("test_autoballoon_in_dom0.py"))
        elif "xen" in item.keywords:
            item.add_marker(skip("test_in_dom0.py"))
