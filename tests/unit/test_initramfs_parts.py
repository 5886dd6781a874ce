"""The initramfs' building blocks: the cpio writer and the module load order."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host.cpio import CpioWriter
from pyxen.lab.host.kmod import load_order, modinfo


def test_cpio_is_readable_by_gnu_cpio(tmp_path):
    w = CpioWriter()
    w.add_file("init", b"#!/bin/sh\necho hi\n", 0o755)
    w.add_file("modules/a.ko", b"\x00" * 5)
    w.add_symlink("bin/sh", "busybox")
    archive = tmp_path / "a.cpio.gz"
    w.write_gz(archive)
    if shutil.which("cpio") is None:
        pytest.skip("GNU cpio not installed")
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=gzip.decompress(archive.read_bytes()),
                   cwd=out, check=True)
    assert (out / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "init").stat().st_mode & 0o777 == 0o755
    assert (out / "modules/a.ko").read_bytes() == b"\x00" * 5
    assert (out / "bin/sh").is_symlink() and str((out / "bin/sh").readlink()) == "busybox"


def _module(tmp: Path, name: str, depends: str) -> Path:
    """A real ELF64 object with a .modinfo section, as a kernel module has."""
    src = tmp / f"{name}.c"
    src.write_text(f'__attribute__((section(".modinfo"), used)) static const char '
                   f'info[] = "license=GPL\\0depends={depends}\\0name={name}";\n')
    ko = tmp / "kernel" / f"{name}.ko"
    ko.parent.mkdir(exist_ok=True)
    subprocess.run(["cc", "-c", str(src), "-o", str(ko)], check=True)
    return ko


def test_modinfo_reads_depends(tmp_path):
    ko = _module(tmp_path, "9p", "9pnet,netfs")
    info = modinfo(ko.read_bytes())
    assert info["depends"] == "9pnet,netfs" and info["license"] == "GPL"


def test_load_order_puts_dependencies_first(tmp_path):
    _module(tmp_path, "9p", "9pnet,netfs")
    _module(tmp_path, "9pnet", "")
    _module(tmp_path, "netfs", "fscache")
    _module(tmp_path, "fscache", "")
    _module(tmp_path, "xen-evtchn", "")
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    order = [p.name for p in load_order(tmp_path, ["xen_evtchn", "9p", "virtio", "9pnet"])]
    assert order.index("fscache.ko") < order.index("netfs.ko") < order.index("9p.ko")
    assert order.index("9pnet.ko") < order.index("9p.ko")
    assert sorted(order) == sorted(set(order))  # each once
    assert "xen-evtchn.ko" in order  # '-' and '_' are the same module name


def test_missing_module_is_named(tmp_path):
    _module(tmp_path, "9p", "9pnet")
    with pytest.raises(LabError, match="9pnet not found"):
        load_order(tmp_path, ["9p"])
