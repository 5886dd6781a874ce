"""The lab's virtual NUMA nodes are what Xen sees: in the shared boot
(``LAB_VM``: two nodes of one CPU each, where test_in_dom0.py runs
tests/xen/test_scrub.py with the rest of the suite) and, in scheduled runs,
on the scrub benchmark's machine (two CPUs a node, where a node's worker
moves over more than one CPU; ``NUMA_VM_2CPU`` in conftest.py), booted as
the shared boot is (``scrub_debug`` and the scrub workers' boot option) and
running tests/xen/test_scrub.py on its own."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from pyxen.lab.dom0 import xl
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.xenbuild import StagedBuild

pytestmark = pytest.mark.nested


def check_topology(dom0: Dom0) -> None:
    """Xen sees the VM's nodes, its CPUs split evenly over them in order."""
    topo = dom0.run(["xl", "info", "-n"], check=True).stdout
    info = xl.parse_info(topo)
    vm = dom0.options
    assert info["nr_nodes"] == str(vm.numa_nodes)
    assert info["nr_cpus"] == str(vm.cpus)
    # cpu_topology rows: "cpu: core socket node"; the CPUs split evenly, in order.
    nodes = {int(m.group(1)): int(m.group(2))
             for m in re.finditer(r"^\s*(\d+):\s+\d+\s+\d+\s+(\d+)\s*$", topo, re.MULTILINE)}
    per_node = vm.cpus // vm.numa_nodes
    assert nodes == {cpu: cpu // per_node for cpu in range(vm.cpus)}


def skip_without_scrub_workers(staged: StagedBuild) -> None:
    """Skip where the build's series has no scrub workers (scrubd is built
    only where xc_scrub_get exists): no scrub tests to run."""
    if "scrubd" not in staged.programs:
        pytest.skip(f"the Xen {staged.variant.source.branch} series has no "
                    "XEN_SYSCTL_scrub_op (per-node scrub workers) yet")


def test_the_shared_boot_has_two_numa_nodes_one_cpu_each(dom0: Dom0) -> None:
    """What test_in_dom0.py needs to run the scrub tests in the shared boot
    (without it they would be left out of every CI run)."""
    skip_without_scrub_workers(dom0.build)
    assert dom0.options.numa_nodes == 2 and dom0.options.cpus == 2
    assert "scrub_debug" in dom0.options.xen_cmdline
    # test_scrub.py checks the boot option's budget and period are in force.
    assert any(o.startswith("scrub-workers=") for o in dom0.options.xen_cmdline)
    check_topology(dom0)


@pytest.mark.scheduled
def test_two_cpus_a_node_are_what_xen_sees(numa_dom0: Dom0) -> None:
    check_topology(numa_dom0)


@pytest.mark.scheduled
def test_scrub_suite_in_dom0_numa(lab_build: StagedBuild, numa_dom0: Dom0,
                                  dom0_pytest: Callable[..., list[str]],
                                  check_dom0_suite: Callable[..., None]) -> None:
    staged = lab_build   # the patched debug build (tests/nested/conftest.py)
    skip_without_scrub_workers(staged)
    res = numa_dom0.run(dom0_pytest("test_scrub.py", "-q", "-s", "-rfEs", "--durations=12",
                                    hypothesis=False),
                        timeout=1800)
    check_dom0_suite("the scrub tests", res, min_passed=4,
                     console=numa_dom0.serial_log.read_text(errors="replace"))
