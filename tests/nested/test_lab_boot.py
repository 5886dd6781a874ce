"""The lab boots Xen, runs the staged toolstack, and tiny guests live and die."""

from __future__ import annotations

import sys
import time

import pytest

from pyxen.config import DomainConfig
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import BootError, Dom0Timeout
from pyxen.lab.dom0 import xl
from pyxen.lab.dom0.drivers import GUEST_BANNER
from pyxen.lab.host import paths
from pyxen.lab.host.vm import Dom0, qemu_processes
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild

pytestmark = pytest.mark.nested

#: Free memory may differ from the baseline by this much after all guests are
#: gone: none.  Xen counts pages awaiting scrub as free, and everything a
#: destroyed domain held (its RAM, page tables, p2m) goes back to the heap.
FREE_MEMORY_TOLERANCE_MIB = 0


def domains(dom0: Dom0) -> list[xl.DomainRow]:
    return xl.parse_list(dom0.run(["xl", "list"], check=True).stdout)


def free_memory(dom0: Dom0) -> int:
    return int(xl.parse_info(dom0.run(["xl", "info"], check=True).stdout)["free_memory"])


def wait_until(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.5)


def test_the_staged_toolstack_runs_in_dom0(dom0: Dom0) -> None:
    ps = dom0.run(["ps", "-eo", "args"], check=True).stdout
    tools = str(dom0.build.tools_root)
    for daemon in ("xenstored", "xenconsoled"):
        assert any(line.startswith(tools) and daemon in line for line in ps.splitlines()), \
            f"{daemon} is not the staged one:\n{ps}"
    which = dom0.run(["sh", "-c", "command -v xl"], check=True).stdout.strip()
    assert which.startswith(tools)


def test_xenstored_may_open_as_many_files_as_launch_xenstore_lets_it(dom0: Dom0) -> None:
    """As upstream's launch-xenstore starts it: with the system's limit on
    open files, not the 1024 a host of 500 guests (a socket for each guest's
    ``xl`` monitor, besides its ring) would run out of."""
    script = ('read pid < /run/xenstored.pid; cat /proc/sys/fs/nr_open; '
              'grep "^Max open files" /proc/$pid/limits')
    nr_open, limits = dom0.run(["sh", "-c", script], check=True).stdout.splitlines()
    assert limits.split()[3:5] == [nr_open, nr_open], limits


def test_status_output_and_files_come_back(dom0: Dom0) -> None:
    script = 'echo out; echo err >&2; xl info > "$PYXEN_OUT/info.txt"; exit 7'
    res = dom0.run(["sh", "-c", script])
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    info = xl.parse_info((res.files / "info.txt").read_text())
    major, minor = dom0.build.variant.source.version.split(".")[:2]
    assert (info["xen_major"], info["xen_minor"]) == (major, minor)   # the Xen built


def test_only_domain0_is_running(dom0: Dom0) -> None:
    # After boot, or after the in-dom0 suite of this build ran in the same
    # boot (test_in_dom0.py): it leaves no domain behind.
    assert [d.name for d in domains(dom0)] == ["Domain-0"]


def test_the_lab_build_s_debug_hypervisor_is_what_booted(dom0: Dom0) -> None:
    assert dom0.build.variant.debug
    # Xen's banner, from the serial log: by now a suite may have run in this
    # boot, and Xen's console ring (xl dmesg) no longer holds the banner.
    banner = [line for line in dom0.serial_log.read_text(errors="replace").splitlines()
              if "Xen version" in line]
    assert banner and "debug=y" in banner[0], banner


def test_three_tiny_guests_print_their_line_and_leave_nothing(dom0: Dom0) -> None:
    kernel = paths.tinyguest_path()
    assert kernel.exists(), f"tiny guest not built: {kernel}"
    baseline = free_memory(dom0)
    names = [f"nested-{i}" for i in range(3)]
    for name in names:
        cfg = dom0.share(f"{name}.cfg", DomainConfig(name, kernel, memory_mib=16).to_xl_config())
        dom0.run(["xl", "create", cfg], check=True, timeout=120)

    running = {d.name: d for d in domains(dom0)}
    for name in names:
        assert name in running, f"{name} not listed: {sorted(running)}"
        assert running[name].memory_mib == 16
        assert "c" not in running[name].state, f"{name} crashed: {running[name].state}"

    def printed(name: str) -> bool:
        res = dom0.run(["cat", f"/var/log/xen/console/guest-{name}.log"])
        return res.returncode == 0 and GUEST_BANNER in res.stdout

    for name in names:
        wait_until(lambda n=name: printed(n), 60, f"{name}'s console line")
    assert free_memory(dom0) <= baseline - 3 * 16

    for name in names:
        dom0.run(["xl", "destroy", name], check=True, timeout=120)
    wait_until(lambda: [d.name for d in domains(dom0)] == ["Domain-0"], 60,
               "xl list to show Domain-0 only")
    wait_until(lambda: abs(free_memory(dom0) - baseline) <= FREE_MEMORY_TOLERANCE_MIB, 60,
               f"free memory back to {baseline} MiB")


def _vm(staged: StagedBuild, **options: object) -> Dom0:
    return Dom0(staged, VMOptions(**options))  # type: ignore[arg-type]


#: Run in dom0: READs xenstored traced with its trace switched off, then on.
_TRACE_SWITCH = """
import subprocess
from pathlib import Path
from pyxen.lab.contract import protocol
from pyxen.lab.dom0.xstrace import TraceReader, set_xs_trace
trace = TraceReader(Path(protocol.XS_TRACE))
def read_twice():
    for _ in range(2):
        subprocess.run(["xenstore-read", "/local/domain/0/name"], check=True,
                       capture_output=True)
set_xs_trace(False)
read_twice()
off = trace.take().get("READ", 0)
set_xs_trace(True)
read_twice()
on = trace.take().get("READ", 0)
print(off, on)
"""


def test_the_benchmark_switches_xenstored_s_trace_off_and_on(dom0: Dom0) -> None:
    # The benchmark times storms with the trace off and counts requests with
    # it on (pyxen.lab.dom0.dom0bench): both halves must hold.
    res = dom0.run([sys.executable, "-c", _TRACE_SWITCH], check=True, timeout=120)
    assert res.stdout.split() == ["0", "2"], res.stdout + res.stderr


def test_a_small_storm_runs_through_the_drivers_request(dom0: Dom0) -> None:
    """The host's storm request reaches dom0bench in dom0 and its result
    comes back whole: the path ``python -m pyxen.lab bench`` takes, on two
    guests."""
    from pyxen.lab.contract.requests import StormRequest
    from pyxen.lab.host.bench import run_storm

    before = free_memory(dom0)
    req = StormRequest(guests=2, concurrency=2, kernel=paths.tinyguest_path().absolute(),
                       prefix="ci-storm-")
    result = run_storm(dom0, req)
    assert result["errors"] == [], result["errors"]
    assert result["guests"] == 2 and result["concurrency"] == 2
    assert result["console_ok"] == 2
    assert len(result["create_s"]) == 2 and all(t is not None for t in result["create_s"])
    assert result["xs_requests_per_create"] and result["xs_requests_per_create"] > 0
    assert result["leftover_domains"] == []
    wait_until(lambda: free_memory(dom0) == before, 30, "free memory back to the baseline")


def test_the_xenstore_latency_driver_runs_through_its_request(dom0: Dom0) -> None:
    """The path ``python -m pyxen.lab xsbench`` takes, on a small run: the
    idle connections are real (xenstored holds a descriptor for each) and
    every read returns the node's value."""
    from pyxen.lab.contract.requests import XsLatencyRequest
    from pyxen.lab.host.xsbench import run_latency

    result = run_latency(dom0, XsLatencyRequest(idle=(0, 16), reads=20, rounds=2,
                                                syscall_reads=50))
    assert result["errors"] == [], result["errors"]
    points = result["points"]
    assert [(p["round"], p["idle"]) for p in points] == [(0, 0), (0, 16), (1, 16), (1, 0)]
    by = {(p["round"], p["idle"]): p for p in points}
    assert by[0, 16]["xenstored_fds"] - by[0, 0]["xenstored_fds"] >= 16
    assert by[1, 0]["xenstored_fds"] < by[1, 16]["xenstored_fds"]   # closed again
    assert all(p["us_median"] > 0 and p["wrong_values"] == 0 for p in points)
    # strace counted xenstored's calls per read: at least reading the
    # request and writing the reply.
    assert [c["idle"] for c in result["syscalls"]] == [0, 16]
    assert all(c["total_per_read"] >= 2 and c["per_read"] for c in result["syscalls"])


def test_a_command_switches_the_library_cache_for_itself(dom0: Dom0) -> None:
    """What a shared boot's replays rely on: a command's environment is
    the boot's with the request's on top (the boot has the cache off)."""
    shown = dom0.run(["env"], timeout=30, env=protocol.lib_cache_env(True)).check().stdout
    assert {"LIBXENSTORE_CACHE=1", "PYXEN_LIB_CACHE=1"} <= set(shown.split())
    shown = dom0.run(["env"], timeout=30).check().stdout
    assert {"LIBXENSTORE_CACHE=0", "PYXEN_LIB_CACHE=0"} <= set(shown.split())


@pytest.mark.parametrize("lib_cache", [None, True], ids=["as-booted", "libcache"])
def test_the_autoscale_driver_replays_a_few_invocations_end_to_end(
        dom0: Dom0, lib_cache: bool | None) -> None:
    """The path ``python -m pyxen.lab autoscale`` takes, on three
    invocations of two functions: the second of f0 finds its instance warm,
    every instance is destroyed after its keep-alive, and nothing is left;
    also with libxenstore's cache switched on for the replay alone, as
    ``--share-boot`` does."""
    from pyxen.lab.contract.requests import AutoscaleRequest
    from pyxen.lab.host.autoscale import run_replay

    guest = paths.tinyguest_path().absolute()
    result = run_replay(dom0, AutoscaleRequest(
        # f0's second invocation 12 s after its first: its instance is idle
        # by then unless the cold start took over 10 s (it took 1-2 s on an
        # idle host, over 6 s on a loaded one).
        guest, funcs=(0, 1, 0), starts=(0.0, 0.5, 12.0), durations=(2.0, 1.0, 1.0),
        keep_alive_s=15.0, memory_mib=16, max_inflight=4), lib_cache)
    assert result["errors"] == [], result["errors"]
    assert result["invocations_done"] == 3 and result["invocations_failed"] == 0
    assert result["creates"] == 2 and result["cold_invocations"] == 2
    assert result["cold_start_s"]["count"] == 2 and result["cold_start_s"]["p50"] > 0
    assert result["leftover_domains"] == [] and result["xenstore_nodes_left"] == []
    assert result["memory_not_returned_mib"] == 0


def test_the_boot_says_how_the_host_backs_its_ram(dom0: Dom0) -> None:
    """QEMU's resident memory as the host sees it: what benchmarks record
    per boot (huge pages or not make TCG faster or slower)."""
    backing = dom0.ram_backing()
    assert backing is not None
    assert 0 < backing["rss_mib"] <= dom0.options.memory_mib + 2048   # + QEMU, TCG
    assert 0 <= backing["huge_mib"] <= backing["rss_mib"]


@pytest.mark.ends_shared_boot
def test_a_command_past_its_timeout_kills_the_vm(dom0: Dom0) -> None:
    # This kills the shared boot (a later user would get a new one): the
    # marker makes it the last nested test of a run.
    assert qemu_processes(dom0.run_dir)
    with pytest.raises(Dom0Timeout, match="sleep"):
        dom0.run(["sleep", "600"], timeout=3)
    assert not dom0.alive
    assert qemu_processes(dom0.run_dir) == []


def test_a_dom0_that_cannot_boot_fails_fast_with_the_serial_log(lab_build: StagedBuild) -> None:
    # 16 MiB is far too little for the Debian kernel: dom0 panics early.
    vm = _vm(lab_build, xen_cmdline=("dom0_mem=16M,max:16M",), boot_timeout_s=240)
    start = time.monotonic()
    with pytest.raises(BootError) as info, vm:
        pass
    assert time.monotonic() - start < 240
    assert "(XEN)" in info.value.serial_tail
    assert qemu_processes(vm.run_dir) == []


def test_boot_timeout_is_enforced(lab_build: StagedBuild) -> None:
    vm = _vm(lab_build, boot_timeout_s=2)
    with pytest.raises(BootError, match="not up after 2 s"), vm:
        pass
    assert qemu_processes(vm.run_dir) == []
