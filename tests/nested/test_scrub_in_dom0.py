"""Checks that the lab's two virtual NUMA nodes are what Xen sees, and runs
tests/xen/test_scrub.py, in the dom0 of the patched debug hypervisor
booted with two virtual NUMA nodes (one CPU each; in scheduled runs also two
each) and
``scrub_debug``: Xen poisons every freed page and checks every page it hands
out is zero, so a dirty page given to a guest stops Xen and fails the run."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyxen.lab.dom0 import xl
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.scrubbench import SCRUB_VM
from pyxen.lab.host.xenbuild import StagedBuild

pytestmark = pytest.mark.nested


#: Two virtual NUMA nodes of one CPU each (CPU 0 on node 0, CPU 1 on node 1),
#: 1.5 GiB each, with ``scrub_debug``: the scrub benchmark's machine
#: (SCRUB_VM) with half its CPUs, what every run boots.  Under TCG every
#: vCPU is a host thread, and the tests keep every pCPU busy with two
#: spinners each: on a 2-core host four pCPUs ran dom0 at half the speed
#: two do.
NUMA_VM = dataclasses.replace(SCRUB_VM, cpus=2, memory_mib=3072, xen_cmdline=("scrub_debug",))
#: The benchmark's machine itself (two CPUs a node) with ``scrub_debug``, in
#: scheduled runs: there a node's worker moves over more than one CPU.
NUMA_VM_2CPU = dataclasses.replace(SCRUB_VM, xen_cmdline=("scrub_debug",))


@pytest.fixture(scope="module", params=[
    pytest.param(NUMA_VM, id="one-cpu-a-node"),
    pytest.param(NUMA_VM_2CPU, id="two-cpus-a-node", marks=pytest.mark.scheduled),
])
def numa_dom0(request: pytest.FixtureRequest, lab_build: StagedBuild,
              repo: Path) -> Iterator[Dom0]:
    """The lab's build booted on two NUMA nodes with ``scrub_debug``, one
    boot for this module's tests on each machine."""
    with Dom0(lab_build, request.param, extra_binds=[repo]) as dom0:
        yield dom0


def test_two_virtual_numa_nodes_are_what_xen_sees(numa_dom0: Dom0) -> None:
    topo = numa_dom0.run(["xl", "info", "-n"], check=True).stdout
    info = xl.parse_info(topo)
    assert info["nr_nodes"] == "2"
    vm = numa_dom0.options
    assert info["nr_cpus"] == str(vm.cpus)
    # cpu_topology rows: "cpu: core socket node"; the CPUs split evenly, in order.
    nodes = {int(m.group(1)): int(m.group(2))
             for m in re.finditer(r"^\s*(\d+):\s+\d+\s+\d+\s+(\d+)\s*$", topo, re.MULTILINE)}
    per_node = vm.cpus // vm.numa_nodes
    assert nodes == {cpu: cpu // per_node for cpu in range(vm.cpus)}


def test_scrub_suite_in_dom0_numa(lab_build: StagedBuild, numa_dom0: Dom0,
                                  dom0_durations: Callable[[str], None],
                                  dom0_pytest: Callable[..., list[str]],
                                  suite_outcome: Callable[[str], tuple[int, list[str]]]) -> None:
    staged = lab_build   # the patched debug build (tests/nested/conftest.py)
    if "scrubd" not in staged.programs:   # built only where xc_scrub_get exists
        pytest.skip(f"the Xen {staged.variant.source.branch} series has no "
                    "XEN_SYSCTL_scrub_op (per-node scrub workers) yet")
    res = numa_dom0.run(dom0_pytest("test_scrub.py", "-q", "-s", "-rfEs", "--durations=12",
                                    hypothesis=False),
                        timeout=1800)
    serial = numa_dom0.serial_log.read_text(errors="replace")
    out = res.stdout + res.stderr
    dom0_durations(out)
    print(out[-6000:])
    assert res.returncode == 0, \
        f"scrub tests in dom0 failed:\n{out[-6000:]}\nXen's console:\n{serial[-3000:]}"
    passed, skips = suite_outcome(out)
    assert passed >= 4, "the scrub tests did not all run"
    assert not skips, "a scrub test was skipped in dom0: " + "; ".join(skips)
