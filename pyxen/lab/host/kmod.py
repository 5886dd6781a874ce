"""Kernel modules for the dom0 initramfs: read a module's dependencies from its
``.modinfo`` section and order a set of modules so dependencies load first.

The host has no depmod for the guest kernel, and the Debian package ships no
modules.dep, so the dependency list is read from each module itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from pyxen.lab.contract.errors import LabError

#: Modules dom0 loads from its initramfs, in the order the notes found to work:
#: virtio + 9p for the host share, then the Xen device drivers the toolstack needs.
DOM0_MODULES: tuple[str, ...] = (
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
    "virtio_pci", "netfs", "fscache", "9pnet", "9pnet_virtio", "9p",
    "xen_evtchn", "xen_privcmd", "xen_gntdev", "xen_gntalloc", "xenfs",
)


def normalize(name: str) -> str:
    """Module names treat '-' and '_' alike."""
    return name.replace("-", "_")


def modinfo(ko: bytes) -> dict[str, str]:
    """The key=value pairs of an ELF64 module's .modinfo section."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2:
        raise LabError("not an ELF64 kernel module")
    shoff, = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)
    sections = []
    for i in range(shnum):
        name_off, _type, _flags, _addr, off, size = struct.unpack_from(
            "<IIQQQQ", ko, shoff + i * shentsize)
        sections.append((name_off, off, size))
    _n, strtab_off, strtab_size = sections[shstrndx]
    strtab = ko[strtab_off:strtab_off + strtab_size]
    for name_off, off, size in sections:
        end = strtab.index(b"\0", name_off)
        if strtab[name_off:end] == b".modinfo":
            info: dict[str, str] = {}
            for entry in ko[off:off + size].split(b"\0"):
                if b"=" in entry:
                    k, v = entry.decode(errors="replace").split("=", 1)
                    info.setdefault(k, v)
            return info
    return {}


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Normalized module name -> .ko path for every module under modules_dir."""
    return {normalize(p.name[:-3]): p for p in modules_dir.rglob("*.ko")}


def builtin_modules(modules_dir: Path) -> set[str]:
    path = modules_dir / "modules.builtin"
    if not path.exists():
        return set()
    return {normalize(Path(line.strip()).name[:-3])
            for line in path.read_text().splitlines() if line.strip().endswith(".ko")}


def load_order(modules_dir: Path, wanted: Iterable[str]) -> list[Path]:
    """The .ko files to insmod, dependencies before dependents, each once.

    Modules built into the kernel are skipped; a module that is neither a file
    nor built in is an error naming it.
    """
    index = module_index(modules_dir)
    builtin = builtin_modules(modules_dir)
    order: list[Path] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = normalize(name)
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise LabError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in index:
            if name in builtin:
                state[name] = "done"
                return
            raise LabError(f"kernel module {name} not found under {modules_dir}")
        state[name] = "visiting"
        deps = modinfo(index[name].read_bytes()).get("depends", "")
        for dep in filter(None, deps.split(",")):
            visit(dep, chain + (name,))
        state[name] = "done"
        order.append(index[name])

    for name in wanted:
        visit(name, ())
    return order
