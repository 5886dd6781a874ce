"""Fixtures of the nested tests: a booted stock lab, shared by a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyxen.lab.host import variants
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import build


@pytest.fixture(scope="module")
def dom0() -> Iterator[Dom0]:
    """Stock Xen booted nested (built on first use; cached after)."""
    staged = build(variants.resolve("stock"))
    with Dom0(staged, VMOptions()) as d:
        yield d
