"""The CLI's behaviour on Ctrl-C.  (What the lab's VM options boot is
checked where a suite boots them: the debug hypervisor in test_lab_boot.py,
two virtual NUMA nodes in test_scrub_in_dom0.py.)"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyxen.lab.host.vm import qemu_processes
from pyxen.lab.host.xenbuild import StagedBuild

pytestmark = pytest.mark.nested


def test_ctrl_c_stops_the_lab_and_its_vm(lab_build: StagedBuild) -> None:
    """Ctrl-C while the lab waits for its VM ends QEMU.  It is sent during
    the boot, once QEMU runs: the CLI's waits (for the boot, for a command)
    end alike on KeyboardInterrupt, and not waiting for dom0 spares the
    test a whole boot."""
    build_args = ["--variant", lab_build.variant.name] + (["--debug"] if lab_build.variant.debug else [])
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "pyxen.lab", "run", *build_args, "--timeout", "900", "--",
         "sleep", "900"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stderr is not None
    try:
        # The lab logs "booting (<run dir>)" once QEMU has started.  The wait
        # for it is bounded even if the lab falls silent.
        # Read the pipe's descriptor itself (os.read), not the text wrapper,
        # whose buffer select() does not see.
        run_dir = None
        seen = ""
        deadline = time.monotonic() + 120
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr.fileno(), selectors.EVENT_READ)
            while run_dir is None:
                left = deadline - time.monotonic()
                assert left > 0 and sel.select(left), "QEMU never started:\n" + seen
                chunk = os.read(proc.stderr.fileno(), 65536).decode(errors="replace")
                assert chunk, "the lab exited before QEMU started:\n" + seen
                seen += chunk
                m = re.search(r"booting \((.+)\)\n", seen)
                if m:
                    run_dir = m.group(1)
        qemu = qemu_processes(run_dir)
        assert qemu
        time.sleep(3)   # into the boot
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    assert all(not Path(f"/proc/{pid}").exists() for pid in qemu), "QEMU is still running"
