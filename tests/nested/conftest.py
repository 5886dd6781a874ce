"""Fixtures of the nested tests: the one build the lab's own tests boot, and
a booted lab shared by a module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyxen.lab.host import progress, variants
from pyxen.lab.host.vm import Dom0, SharedDom0
from pyxen.lab.host.vm_options import VMOptions
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
def dom0_pytest(pytestconfig: pytest.Config) -> Callable[..., list[str]]:
    """The command line of a pytest run inside dom0 over this repository's
    ``tests/xen/<target>`` (the whole directory for ``""``) against the Xen
    it runs on, with *options* (markers, -q, --durations...) added, and
    without Hypothesis's pytest plugin if ``hypothesis=False``.  A
    scheduled run (``--scheduled``) is scheduled inside dom0 too: the cases
    marked ``scheduled`` there run, and tests with a length run their
    scheduled length instead of CI's (``run_length``)."""
    scheduled = ["--scheduled"] if pytestconfig.getoption("--scheduled") else []

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
    bytecode).  Measured in a 2-pCPU lab: collecting tests/xen in dom0 took
    36 s without it, 15 s with it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([*dom0_argv, "--collect-only", "-q"], env=env, cwd=REPO,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"collecting tests/xen on the host failed ({done.returncode}):\n"
                    f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def lab_boot(lab_build: StagedBuild) -> Iterator[SharedDom0]:
    """The lab tests' build booted nested with the default VM options, one
    boot shared by the session: the in-dom0 suite of this build
    (test_in_dom0.py) and the lab's own tests (test_lab_boot.py) run in it.
    Under TCG a boot is the largest fixed cost of a nested test (about a
    minute here, three on a slow machine)."""
    shared = SharedDom0(lab_build, VMOptions(), extra_binds=[REPO])
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
