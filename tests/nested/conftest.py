"""Fixtures of the nested tests: the one build the lab's own tests boot, and
a booted lab shared by a module."""

from __future__ import annotations

from collections.abc import Iterator

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
