"""The dom0 initramfs: busybox, the init script and the kernel modules it loads."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyxen.lab.contract.errors import MissingHostPackage
from pyxen.lab.host import hostdeps, kmod, paths
from pyxen.lab.host.cpio import CpioWriter
from pyxen.lab.host.sources import Kernel

#: The statically linked busybox of Debian's busybox-static.
BUSYBOX = Path("/bin/busybox")

#: Bump when the archive's layout (what is added besides the inputs) changes.
LAYOUT_VERSION = 2


def build_initramfs(kernel: Kernel, dest_dir: Path) -> Path:
    """Write (or reuse) the initramfs for ``kernel``; returns its path."""
    if not BUSYBOX.exists():
        raise MissingHostPackage([hostdeps.BUSYBOX_PACKAGE])
    init = paths.package_data("init.sh").read_bytes()
    busybox = BUSYBOX.read_bytes()
    modules = kmod.load_order(kernel.modules, kmod.DOM0_MODULES)
    digest = hashlib.sha256(f"{LAYOUT_VERSION}".encode() + init + busybox
                            + kernel.release.encode()
                            + "".join(m.name for m in modules).encode()).hexdigest()[:12]
    out = dest_dir / f"initramfs-{kernel.release}-{digest}.cpio.gz"
    if out.exists():
        return out
    cpio = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "modules"):
        cpio.mkdir(d)
    cpio.add_file("bin/busybox", busybox, 0o755)
    cpio.add_symlink("bin/sh", "busybox")  # init.sh's interpreter
    cpio.add_file("init", init, 0o755)
    for ko in modules:
        cpio.add_file(f"modules/{ko.name}", ko.read_bytes())
    cpio.add_file("modules.order", "".join(f"{ko.name}\n" for ko in modules).encode())
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    cpio.write_gz(tmp)
    tmp.rename(out)
    return out
