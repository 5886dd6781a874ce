"""Host packages the lab needs, checked and installed from Debian's archive."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from pyxen.lab.contract.errors import LabError, MissingHostPackage

log = logging.getLogger(__name__)

#: The packages of QEMU and of the initramfs' shell (named where a missing
#: program is found, too).
QEMU_PACKAGE = "qemu-system-x86"
BUSYBOX_PACKAGE = "busybox-static"

#: Debian packages by purpose.  The one list of what the lab needs.
PACKAGES: dict[str, tuple[str, ...]] = {
    # Booting Xen nested: QEMU, the initramfs' shell.
    "boot": (QEMU_PACKAGE, BUSYBOX_PACKAGE),
    # Building the hypervisor and the toolstack: what the hypervisor's Kconfig
    # and the tools' configure ask for with the lab's flags (xenbuild).  The
    # toolstack takes json-c (>= 0.15; 4.22 falls back to yajl without it).
    "build": (
        "build-essential", "flex", "bison", "autoconf", "automake",
        "autotools-dev", "pkg-config", "acpica-tools", "gettext", "python3-dev",
        "python3-setuptools", "libjson-c-dev", "uuid-dev", "libncurses-dev",
        "zlib1g-dev", "libzstd-dev", "liblzma-dev", "libbz2-dev",
        "liblzo2-dev", "libssl-dev", "libnl-3-dev", "libnl-route-3-dev",
        "libfdt-dev",
    ),
    # Checking a series patch by patch (check-series): git am, the Flask
    # policy's compiler.
    "check": ("git", "checkpolicy"),
    # Counting a daemon's system calls in dom0 (xsbench: strace -c).
    "measure": ("strace",),
    # Building the project's own C parts (tiny guest, bindings).
    "project": ("libxen-dev", "ninja-build", "python3-venv"),
}

def all_packages() -> list[str]:
    """Every package of every purpose, once, in a stable order."""
    seen: dict[str, None] = {}
    for group in PACKAGES.values():
        for pkg in group:
            seen.setdefault(pkg, None)
    return list(seen)


def missing_packages(packages: list[str] | None = None) -> list[str]:
    """The packages of ``packages`` (default: all) that dpkg does not have installed."""
    wanted = packages if packages is not None else all_packages()
    if shutil.which("dpkg-query") is None:
        raise LabError("dpkg-query not found: the lab needs a Debian (or derived) host")
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *wanted],
        capture_output=True, text=True, check=False,
    )
    installed = {
        line.split()[0]
        for line in proc.stdout.splitlines()
        if line.endswith(" installed")
    }
    return [p for p in wanted if p not in installed]


def check(packages: list[str] | None = None) -> None:
    """Raise MissingHostPackage naming every missing package."""
    missing = missing_packages(packages)
    if missing:
        raise MissingHostPackage(missing)


def _apt(args: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(["apt-get", *args], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise LabError(f"apt-get {' '.join(args)} failed:\n{tail}")


def install(packages: list[str] | None = None) -> list[str]:
    """Install what is missing (needs root); returns what was installed."""
    if os.geteuid() != 0:
        raise LabError("installing host packages needs root (apt-get)")
    missing = missing_packages(packages)
    if missing:
        log.info("apt-get update")
        _apt(["update", "-q"])
    if missing:
        log.info("apt-get install %s", " ".join(missing))
        _apt(["install", "-y", "-q", "--no-install-recommends", *missing])
    return missing
