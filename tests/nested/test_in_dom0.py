"""Runs the tests marked ``xen`` (tests/xen) inside the lab's dom0, through
pyxen, once per build: stock, patched (when it differs from stock) and the
patched build with a debug hypervisor (assertions on: what the patches must
survive).  The autoballoon tests need a dom0 without dom0_mem
(test_autoballoon_in_dom0.py); the scrub tests need two NUMA nodes: they run
here in the lab's shared boot, which has them (``LAB_VM``), and not in a
build's boot of its own (the default machine, one node)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.host import variants
from pyxen.lab.host.vm import Dom0, SharedDom0
from pyxen.lab.host.xenbuild import build

pytestmark = pytest.mark.nested


#: The patched toolstack runs its suite under the debug hypervisor in every
#: run (Xen's assertions on); under the release hypervisor only in scheduled
#: runs: the toolstack is the same build, and a boot with its suite is the
#: largest single cost of a CI run on a slow machine.  Stock Xen's suite also
#: runs in scheduled runs only: stock does not change between commits (what
#: it checks is that the tests still tell stock's defects), and leaving it
#: out spares a CI run stock's builds as well as its boot.
@pytest.mark.parametrize("variant,debug", [
    pytest.param("stock", False, marks=pytest.mark.scheduled),
    pytest.param("patched", False, marks=pytest.mark.scheduled),
    ("patched", True),
], ids=["stock", "patched", "patched-debug"])
def test_xen_suite_in_dom0(variant: str, debug: bool, lab_boot: SharedDom0, repo: Path,
                           dom0_pytest: Callable[..., list[str]],
                           check_dom0_suite: Callable[..., None]) -> None:
    staged = build(variants.resolve(variant, debug=debug))
    if variant == "patched" and not debug:
        stock = build(variants.resolve("stock"))
        if (stock.hypervisor_key, stock.tools_key) == (staged.hypervisor_key, staged.tools_key):
            pytest.skip("patched is identical to stock (patches/series is empty): "
                        "the stock run covers it")
    # The variant: tests that show a stock defect the series fixes expect it on stock.
    env = {"HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/hypothesis", protocol.ENV_VARIANT: variant}
    for var in ("HYPOTHESIS_PROFILE", *protocol.ENV_RUN_LENGTHS, "CI"):
        if var in os.environ:
            env[var] = os.environ[var]
    shared = (staged.hypervisor_key, staged.tools_key) == \
        (lab_boot.build.hypervisor_key, lab_boot.build.tools_key)
    # The scrub tests where the machine has two nodes and Xen the series'
    # scrub workers (their dom0 daemon is built only where the series has
    # XEN_SYSCTL_scrub_op).
    scrub = shared and lab_boot.options.numa_nodes > 1 and "scrubd" in staged.programs
    markers = "not autoballoon" if scrub else "not scrub and not autoballoon"
    if variant == "stock":
        # A stock defect that would hang or crash this boot (for instance a
        # PV guest's uninitialised PoD lock taken by offline_page()), and
        # tests of what only the series has (they would skip).
        markers += " and not breaks_stock and not series_only"
    argv = dom0_pytest("", "-m", markers,
                       # A test stuck for 5 min dumps every thread's stack.
                       "-o", "faulthandler_timeout=300",
                       "-q", "-rfEsp", "--durations=12")
    if shared:
        # The lab's own build: its boot is shared with the lab's tests
        # (test_lab_boot.py), which run after this suite in it and check
        # that it left nothing behind.
        vm = lab_boot.get()   # booted on first get()
        res = vm.run(argv, timeout=1500, env=env)
        serial = vm.serial_log.read_text(errors="replace")
    else:
        with Dom0(staged, extra_binds=[repo]) as dom0:
            res = dom0.run(argv, timeout=1200, env=env)
            serial = dom0.serial_log.read_text(errors="replace")
    check_dom0_suite(f"the Xen tests ({variant}, debug={debug})", res, console=serial,
                     min_passed_in={"test_scrub.py": 4} if scrub else None)
