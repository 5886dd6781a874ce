"""Lab options that change what boots: virtual NUMA, the debug hypervisor, and
the CLI's behaviour on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from pyxen.config import DomainConfig
from pyxen.lab.dom0 import xl
from pyxen.lab.host import paths
from pyxen.lab.host.vm import Dom0, qemu_processes
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild

pytestmark = pytest.mark.nested


def test_two_virtual_numa_nodes_are_what_xen_sees(lab_build: StagedBuild) -> None:
    opts = VMOptions(cpus=4, memory_mib=4096, dom0_vcpus=2, numa_nodes=2)
    with Dom0(lab_build, opts) as dom0:
        info = xl.parse_info(dom0.run(["xl", "info", "-n"], check=True).stdout)
        assert info["nr_nodes"] == "2"
        assert info["nr_cpus"] == "4"
        topo = dom0.run(["xl", "info", "-n"], check=True).stdout
        # cpu_topology rows: "cpu: core socket node"; CPUs 0-1 on node 0, 2-3 on node 1.
        nodes = {int(m.group(1)): int(m.group(2))
                 for m in re.finditer(r"^\s*(\d+):\s+\d+\s+\d+\s+(\d+)\s*$", topo, re.MULTILINE)}
        assert nodes == {0: 0, 1: 0, 2: 1, 3: 1}


def test_debug_hypervisor_boots_and_runs_a_guest(lab_build: StagedBuild) -> None:
    assert lab_build.variant.debug
    with Dom0(lab_build) as dom0:
        dmesg = dom0.run(["xl", "dmesg"], check=True).stdout
        assert "debug=y" in dmesg
        cfg = dom0.share("dbg.cfg", DomainConfig("dbg-0", paths.tinyguest_path()).to_xl_config())
        dom0.run(["xl", "create", cfg], check=True, timeout=120)
        names = [d.name for d in xl.parse_list(dom0.run(["xl", "list"], check=True).stdout)]
        assert "dbg-0" in names
        dom0.run(["xl", "destroy", "dbg-0"], check=True, timeout=120)


def test_ctrl_c_stops_the_lab_and_its_vm(lab_build: StagedBuild) -> None:
    build_args = ["--variant", lab_build.variant.name] + (["--debug"] if lab_build.variant.debug else [])
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "pyxen.lab", "run", *build_args, "--timeout", "900", "--",
         "sleep", "900"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stderr is not None
    run_dir = None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        m = re.search(r"dom0 up \((.+)\)", line)
        if m:
            run_dir = m.group(1)
            break
        assert time.monotonic() < deadline, "lab never came up"
    assert run_dir, "the lab exited before dom0 was up"
    assert qemu_processes(run_dir)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    assert qemu_processes(run_dir) == []
