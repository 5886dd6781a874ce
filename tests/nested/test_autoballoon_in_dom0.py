"""Runs tests/xen/test_autoballoon.py in the dom0 of a lab booted without
dom0_mem, so that xl autoballoons: on stock (xl's global create lock) and on
the patched toolstack with the debug hypervisor (claims, the lock file taken
shared by creates and exclusive by restores; assertions on)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pyxen.lab.host import variants
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import build

pytestmark = pytest.mark.nested


#: Stock's run is for scheduled runs only, as in test_in_dom0.py.
@pytest.mark.parametrize("variant,debug,expect_lock",
                         [pytest.param("stock", False, "1", marks=pytest.mark.scheduled),
                          ("patched", True, "0")],
                         ids=["stock", "patched-debug"])
def test_autoballoon_suite_in_dom0(variant: str, debug: bool, expect_lock: str, repo: Path,
                                   dom0_pytest: Callable[..., list[str]],
                                   check_dom0_suite: Callable[..., None]) -> None:
    staged = build(variants.resolve(variant, debug=debug))
    opts = VMOptions(memory_mib=2048, dom0_mem_mib=None)
    with Dom0(staged, opts, extra_binds=[repo]) as dom0:
        res = dom0.run(dom0_pytest("test_autoballoon.py", "-q", "-s", "-rfEs", "--durations=12",
                                   hypothesis=False),
                       timeout=1800, env={"PYXEN_EXPECT_XL_LOCK": expect_lock})
        serial = dom0.serial_log.read_text(errors="replace")
    check_dom0_suite(f"the autoballoon tests ({variant})", res, min_passed=2, console=serial)
