"""Fixtures of the nested tests: the one build the lab's own tests boot, and
a booted lab shared by a module."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from pyxen.lab.host import progress, variants
from pyxen.lab.host.scrubbench import SCRUB_VM
from pyxen.lab.host.vm import Dom0, Dom0Result, SharedDom0
from pyxen.lab.host.xenbuild import StagedBuild, build

#: What the lab's own tests boot (they test the lab, not a Xen): the patched
#: series with the debug hypervisor, the build whose suite every CI run needs
#: anyway.  So a CI run on a fresh machine builds one hypervisor and one
#: toolstack; stock's builds and suites belong to scheduled runs.
LAB_VARIANT = "patched"
LAB_DEBUG = True


@pytest.fixture(scope="session")
def lab_build() -> StagedBuild:
    """The lab tests' build (made on first use, cached after)."""
    return build(variants.resolve(LAB_VARIANT, debug=LAB_DEBUG))


#: The repository, bound into dom0 so that dom0 runs its tests from it.
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository (bind it into a dom0 that runs its tests)."""
    return REPO


@pytest.fixture(scope="session")
def dom0_pytest(scheduled_run: bool) -> Callable[..., list[str]]:
    """The command line of a pytest run inside dom0 over this repository's
    ``tests/xen/<target>`` (the whole directory for ``""``) against the Xen
    it runs on, with *options* (markers, -q, --durations...) added, and
    without Hypothesis's pytest plugin if ``hypothesis=False``.  A
    scheduled run (``--scheduled``) is scheduled inside dom0 too: the cases
    marked ``scheduled`` there run, and tests with a length run their
    scheduled length instead of CI's (``run_length``)."""
    scheduled = ["--scheduled"] if scheduled_run else []

    def argv(target: str, *options: str, hypothesis: bool = True) -> list[str]:
        # Without Hypothesis's plugin where no test uses it: the plugin
        # imports Hypothesis at the end of a run (11 s of a 2-pCPU lab's
        # time under TCG), and tests/conftest.py imports it only for a test
        # module that uses it.
        plugins = [] if hypothesis else ["-p", "no:hypothesispytest"]
        return [sys.executable, "-P", "-m", "pytest", str(REPO / "tests" / "xen" / target),
                "--xen", "host", "-p", "no:cacheprovider", *plugins, *scheduled, *options,
                "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml")]

    _rewrite_on_host(argv(""))
    return argv


def _rewrite_on_host(dom0_argv: list[str]) -> None:
    """Collect the in-dom0 suites once on the host, with bytecode written:
    pytest then leaves each test module's assertion-rewritten bytecode (and
    the helpers' .pyc) beside it, which dom0 reads over its read-only share
    instead of rewriting every module again in every run (dom0 writes no
    bytecode).  The outer run's own collection does the same only where
    PYTHONDONTWRITEBYTECODE is unset, and not for ``pytest tests/nested``.
    Measured in a 2-pCPU lab: collecting tests/xen in dom0 took 36 s
    without it, 15 s with it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        done = subprocess.run([*dom0_argv, "--collect-only", "-q"], env=env, cwd=REPO,
                              capture_output=True, text=True, check=False, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("collecting tests/xen on the host took over 300 s")
    if done.returncode != 0:
        pytest.fail(f"collecting tests/xen on the host failed ({done.returncode}):\n"
                    f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


#: The machine of the shared boot: the default two CPUs and 3 GiB as two
#: virtual NUMA nodes of one CPU and 1.5 GiB each (the scrub benchmark's
#: machine with half its CPUs), with ``scrub_debug``: Xen poisons every
#: freed page and checks that every page it hands out is zero, so a dirty
#: page given to a guest stops Xen and fails the run.  The whole in-dom0
#: suite runs on it, the scrub tests (which need two nodes) with the rest:
#: one boot and one pytest run in dom0 instead of two, and every test's
#: guests born and dying with the series' per-node scrubbing checked.
#: The scrub workers' boot option, as the lab's scrub machines boot with it:
#: workers off (the default, which the suite's tests expect), with a budget
#: and period other than the defaults, which tests/xen/test_scrub.py checks
#: are in force.  (Xen without the series ignores it.)
SCRUB_BOOT_OPTION = "scrub-workers=no,budget=800,period=8000"
LAB_VM = dataclasses.replace(SCRUB_VM, cpus=2, memory_mib=3072,
                             xen_cmdline=("scrub_debug", SCRUB_BOOT_OPTION))
#: The scrub benchmark's machine itself (two CPUs a node), booted as the
#: shared boot is: test_scrub_in_dom0.py's scheduled run of the scrub tests.
NUMA_VM_2CPU = dataclasses.replace(SCRUB_VM, xen_cmdline=LAB_VM.xen_cmdline)


@pytest.fixture(scope="module")
def numa_dom0(lab_build: StagedBuild) -> Iterator[Dom0]:
    """The lab's build booted on ``NUMA_VM_2CPU``, one boot for the
    scheduled tests of the module that asks for it."""
    with Dom0(lab_build, NUMA_VM_2CPU, extra_binds=[REPO]) as dom0:
        yield dom0


@pytest.fixture(scope="session")
def lab_boot(lab_build: StagedBuild) -> Iterator[SharedDom0]:
    """The lab tests' build booted nested on ``LAB_VM``, one boot shared by
    the session: the in-dom0 suite of this build (test_in_dom0.py) and the
    lab's own tests (test_lab_boot.py, test_scrub_in_dom0.py's topology
    check, test_xs_cache.py's proxy check) run in it.  Under TCG a boot is
    the largest fixed cost of a nested test (about half a minute here, one
    and a half on a slow machine)."""
    shared = SharedDom0(lab_build, LAB_VM, extra_binds=[REPO])
    try:
        yield shared
    finally:
        shared.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The users of the shared boot (tests that ask for ``lab_boot``, or for
    ``dom0`` which comes from it) after every other test, and those marked
    ``ends_shared_boot`` last of all: the shared VM is up only while its
    users run (not idling beside other tests' boots), and no user comes
    after the test that ends it (it would pay for a boot of its own)."""
    def group(item: pytest.Item) -> int:
        if item.get_closest_marker("ends_shared_boot") is not None:
            return 2
        return 1 if "lab_boot" in getattr(item, "fixturenames", ()) else 0
    items.sort(key=group)


@pytest.fixture
def dom0(lab_boot: SharedDom0) -> Dom0:
    """The shared boot of the lab tests' build (booted on first use)."""
    return lab_boot.get()


#: The slowest tests of each suite run inside a dom0 (pytest's --durations
#: table from its output), printed at the end of the outer run: the outer
#: run sees each suite as one test, so a slow CI run would not show where
#: inside a suite its time went.
_DOM0_DURATIONS: list[tuple[str, str]] = []
_DURATIONS_TABLE = re.compile(r"=+ slowest \d+ durations =+\n(.*?)(?:\n\n|\n=|\Z)", re.S)


@pytest.fixture
def dom0_durations(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Call with an in-dom0 pytest run's output to report its slowest tests."""
    def keep(output: str) -> None:
        m = _DURATIONS_TABLE.search(output)
        if m:
            _DOM0_DURATIONS.append((request.node.nodeid, m.group(1).strip()))
    return keep


@pytest.fixture
def check_dom0_suite(dom0_durations: Callable[[str], None],
                     suite_outcome: Callable[[str], tuple[int, list[str]]],
                     module_passes: Callable[[str, str], int]) -> Callable[..., None]:
    """Call with what a suite is, its in-dom0 pytest run's result, the least
    number of tests that must pass, and Xen's console log if a failure
    should show it: keeps the run's slowest tests for the summary, prints
    its output's tail, and fails the test if the run failed, passed fewer
    tests, or skipped any that a run of this kind must not skip.
    ``min_passed_in`` asks at least so many passes of a module's tests (the
    run lists its passes: ``-rp``), e.g. ``{"test_scrub.py": 4}``."""
    def check(what: str, res: Dom0Result, *, min_passed: int = 1, console: str = "",
              min_passed_in: Mapping[str, int] | None = None) -> None:
        out = res.stdout + res.stderr
        dom0_durations(out)
        print(out[-6000:])
        shown = f"\nXen's console:\n{console[-3000:]}" if console else ""
        assert res.returncode == 0, f"{what} failed in dom0:\n{out[-6000:]}{shown}"
        passed, skips = suite_outcome(out)
        assert passed >= min_passed, \
            f"{what}: {passed} passed in dom0, at least {min_passed} must"
        assert not skips, f"{what}: skipped in dom0: " + "; ".join(skips)
        for module, least in (min_passed_in or {}).items():
            n = module_passes(out, module)
            assert n >= least, f"{what}: {n} tests of {module} passed in dom0, " \
                               f"at least {least} must (were they deselected?)"
    return check


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    steps = progress.finished_steps()
    if steps:
        # Builds and boots run inside the tests' fixtures and calls: listed
        # here, a slow run shows which of its minutes went to them.
        terminalreporter.section("the lab's builds and boots in this run")
        for description, seconds in steps:
            terminalreporter.write_line(f"{seconds:8.1f}s {description}")
        terminalreporter.write_line(f"{sum(s for _, s in steps):8.1f}s in all")
    if not _DOM0_DURATIONS:
        return
    terminalreporter.section("slowest tests inside the lab's dom0")
    for nodeid, table in _DOM0_DURATIONS:
        terminalreporter.write_line(nodeid)
        terminalreporter.write_line(table)
