from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host.vm import VMOptions, dom0_binds, qemu_argv

X, K, I = Path("/c/xen"), Path("/c/vmlinuz"), Path("/c/initrd.gz")


def _arg(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_qemu_runs_tcg_with_the_notes_flags(tmp_path):
    argv = qemu_argv(X, K, I, VMOptions(), tmp_path, tmp_path / "serial.log")
    assert _arg(argv, "-accel") == ["tcg,thread=multi"]
    assert "-no-reboot" in argv and "-enable-kvm" not in argv
    xen_cmdline = _arg(argv, "-append")[0].split()
    assert {"smap=0", "smep=0", "console=com1"} <= set(xen_cmdline)
    assert "dom0_mem=1024M,max:1024M" in xen_cmdline
    initrd = _arg(argv, "-initrd")[0]
    assert initrd.startswith(f"{K} ") and initrd.endswith(f",{I}")


def test_commas_in_the_dom0_cmdline_are_escaped(tmp_path, monkeypatch):
    from pyxen.lab.host import vm  # DOM0_CMDLINE is read there
    monkeypatch.setattr(vm, "DOM0_CMDLINE", "console=hvc0 xen_opt=a,b")
    initrd = _arg(qemu_argv(X, K, I, VMOptions(), tmp_path, tmp_path / "s"), "-initrd")[0]
    assert initrd == f"{K} console=hvc0 xen_opt=a,,b,{I}"


def test_autoballoon_drops_dom0_mem(tmp_path):
    argv = qemu_argv(X, K, I, VMOptions(dom0_mem_mib=None), tmp_path, tmp_path / "s")
    assert not any(w.startswith("dom0_mem") for w in _arg(argv, "-append")[0].split())


def test_numa_nodes_split_cpus_and_memory(tmp_path):
    argv = qemu_argv(X, K, I, VMOptions(cpus=4, memory_mib=4096, numa_nodes=2),
                     tmp_path, tmp_path / "s")
    assert _arg(argv, "-numa") == ["node,nodeid=0,cpus=0-1,memdev=m0",
                                   "node,nodeid=1,cpus=2-3,memdev=m1"]
    assert _arg(argv, "-object") == ["memory-backend-ram,id=m0,size=2048M",
                                     "memory-backend-ram,id=m1,size=2048M"]


def test_icount_runs_one_tcg_thread_counting_instructions(tmp_path):
    opts = VMOptions(icount_shift=1)
    argv = qemu_argv(X, K, I, opts, tmp_path, tmp_path / "s")
    # -icount rules out multi-threaded TCG: QEMU refuses the pair.
    assert _arg(argv, "-accel") == ["tcg,thread=single"]
    # sleep=off: idle time is jumped over, not spent in host time.
    assert _arg(argv, "-icount") == ["shift=1,sleep=off"]
    assert opts.record()["accel"] == "tcg-icount" and opts.record()["icount_shift"] == 1
    assert VMOptions().record()["accel"] == "tcg"
    assert "-icount" not in qemu_argv(X, K, I, VMOptions(), tmp_path, tmp_path / "s")


@pytest.mark.parametrize("kw,msg", [
    ({"icount_shift": -1}, "icount_shift"), ({"icount_shift": 11}, "icount_shift"),
    ({"cpus": 0}, "cpus"), ({"numa_nodes": 0}, "numa_nodes"),
    ({"numa_nodes": 3, "cpus": 4}, "divide evenly"),
    ({"xen_cmdline": ("a b",)}, "one word"), ({"boot_timeout_s": 0}, "boot_timeout"),
    # NaN compares false with everything: a boot would be waited for for ever.
    ({"boot_timeout_s": float("nan")}, "boot_timeout"),
    ({"boot_timeout_s": float("inf")}, "boot_timeout"),
])
def test_bad_vm_options_name_the_problem(kw, msg):
    with pytest.raises(ValueError, match=msg):
        VMOptions(**kw).validate()


def test_comma_in_a_module_path_is_refused(tmp_path):
    with pytest.raises(Exception, match="comma"):
        qemu_argv(Path("/a,b/xen"), K, I, VMOptions(), tmp_path, tmp_path / "s")


@pytest.mark.parametrize("where", ["xen", "initramfs", "xchg"])
@pytest.mark.parametrize("odd,reason", [("a,b", "a comma"), ("a b", "whitespace"),
                                        ("a\tb", "whitespace")])
def test_a_path_qemu_cannot_take_is_refused_naming_it_and_why(tmp_path, where, odd, reason):
    # -fsdev path=... ends at a comma; a multiboot module's file name at a space.
    bad = Path("/cache") / odd / "x"
    xen, initramfs, xchg = (bad if where == w else d for w, d in
                            (("xen", X), ("initramfs", I), ("xchg", tmp_path)))
    with pytest.raises(LabError) as info:
        qemu_argv(xen, K, initramfs, VMOptions(), xchg, tmp_path / "s")
    assert repr(str(bad)) in str(info.value) and reason in str(info.value)


def test_qemus_stderr_file_is_closed_once_it_has_started(tmp_path, monkeypatch):
    from pyxen.lab.contract import protocol
    from pyxen.lab.host import vm
    opened = []

    class FakeQemu:
        pid = 0
        returncode = None

        def __init__(self, argv, stderr, **kw):
            opened.append(stderr)

        def poll(self):
            return None

    build = SimpleNamespace(variant=SimpleNamespace(name="stock", debug=False))
    dom0 = vm.Dom0(build, VMOptions(), run_dir=tmp_path / "run")   # type: ignore[arg-type]

    def prepare():
        (dom0.xchg / protocol.READY).parent.mkdir(parents=True)
        (dom0.xchg / protocol.READY).write_text("")
        return ["qemu"]

    monkeypatch.setattr(dom0, "_prepare", prepare)
    monkeypatch.setattr(vm.subprocess, "Popen", FakeQemu)
    dom0._start_once()
    assert len(opened) == 1 and opened[0].name == str(tmp_path / "run" / "qemu.stderr")
    assert opened[0].closed


def test_binds_are_minimal_and_never_usr(tmp_path):
    binds = dom0_binds([tmp_path, tmp_path / "sub", Path("/usr/lib")])
    assert str(tmp_path) in binds
    assert not any(b == "/usr" or b.startswith("/usr/") for b in binds)
    assert not any(b.startswith(o + "/") for b in binds for o in binds)


def test_program_lookup_skips_completion_scripts(tmp_path):
    from pyxen.lab.host.xenbuild import TOOLSTACK_PROGRAMS, find_programs
    (tmp_path / "etc/bash_completion.d").mkdir(parents=True)
    (tmp_path / "etc/bash_completion.d/xl").write_text("complete xl\n")
    (tmp_path / "usr/sbin").mkdir(parents=True)
    for name in TOOLSTACK_PROGRAMS:
        p = tmp_path / "usr/sbin" / name
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
    assert find_programs(tmp_path)["xl"] == str(tmp_path / "usr/sbin/xl")


class _FakeDom0:
    """Stands in for Dom0 in SharedDom0's tests: no QEMU."""

    fail_next = False

    def __init__(self, build: object, options: VMOptions, extra_binds: object = None) -> None:
        self.alive = False
        self.shut = False

    def __enter__(self) -> _FakeDom0:
        if _FakeDom0.fail_next:
            _FakeDom0.fail_next = False
            raise RuntimeError("boot failed")
        self.alive = True
        return self

    def kill(self) -> None:
        self.alive = False

    def shutdown(self) -> None:
        self.alive, self.shut = False, True


def test_a_shared_boot_is_reused_and_booted_again_only_once_it_ended(monkeypatch):
    from pyxen.lab.host import vm
    monkeypatch.setattr(vm, "Dom0", _FakeDom0)
    shared = vm.SharedDom0(build=object(), options=VMOptions())  # type: ignore[arg-type]
    first = shared.get()
    assert shared.get() is first and shared.boots == 1
    first.alive = False             # a command past its timeout killed it
    second = shared.get()
    assert second is not first and shared.boots == 2
    _FakeDom0.fail_next = True
    second.alive = False
    with pytest.raises(RuntimeError, match="boot failed"):
        shared.get()
    assert shared.boots == 2        # a failed boot is not handed out
    third = shared.get()
    assert third.alive and shared.boots == 3
    shared.close()
    assert third.shut and not third.alive
    shared.close()                  # idempotent
