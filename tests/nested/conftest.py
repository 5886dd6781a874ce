"""Fixtures of the nested tests: the one build the lab's own tests boot, and
a booted lab shared by a module."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from pyxen.lab.host import variants
from pyxen.lab.host.vm import Dom0
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


@pytest.fixture(scope="module")
def dom0(lab_build: StagedBuild) -> Iterator[Dom0]:
    """The lab tests' build booted nested, shared by a module."""
    with Dom0(lab_build, VMOptions()) as d:
        yield d


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
    if not _DOM0_DURATIONS:
        return
    terminalreporter.section("slowest tests inside the lab's dom0")
    for nodeid, table in _DOM0_DURATIONS:
        terminalreporter.write_line(nodeid)
        terminalreporter.write_line(table)
