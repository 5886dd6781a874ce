"""Host packages the lab needs, checked and installed from Debian's archive."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from pyxen.lab.errors import LabError, MissingHostPackage

log = logging.getLogger(__name__)

#: Debian packages by purpose.  The one list of what the lab needs.
PACKAGES: dict[str, tuple[str, ...]] = {
    # Booting Xen nested: QEMU, the initramfs' shell.
    "boot": ("qemu-system-x86", "busybox-static"),
    # Getting sources: apt-get source / download.
    "source": ("dpkg-dev", "xz-utils"),
    # Building the hypervisor and the toolstack (see shared/NESTED-XEN.md).
    "build": (
        "build-essential", "flex", "bison", "autoconf", "automake",
        "autotools-dev", "pkg-config", "acpica-tools", "gettext", "python3-dev",
        "python3-setuptools", "libyajl-dev", "uuid-dev", "libncurses-dev",
        "zlib1g-dev", "libzstd-dev", "liblzma-dev", "libbz2-dev",
        "liblzo2-dev", "libssl-dev", "libnl-3-dev", "libnl-route-3-dev",
        "libfdt-dev",
    ),
    # Building the project's own C parts (tiny guest, bindings).
    "project": ("libxen-dev", "ninja-build", "python3-venv"),
}

#: apt sources entry for Debian's main archive sources (deb-src).
DEB_SRC_FILE = Path("/etc/apt/sources.list.d/pyxen-deb-src.sources")


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


def _deb_src_line_present() -> bool:
    for path in [Path("/etc/apt/sources.list"),
                 *Path("/etc/apt/sources.list.d").glob("*")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("deb-src ") and "security" not in line:
                return True
            if line.startswith("Types:") and "deb-src" in line:
                return True
    return False


def deb_src_entry(debian_sources: str) -> str:
    """A deb-src stanza for the main archive, derived from a deb822 sources file.

    Only the main archive serves sources here (the security archive does not),
    so stanzas naming a security suite are dropped.
    """
    out = []
    for stanza in debian_sources.strip().split("\n\n"):
        if "security" in stanza:
            continue
        lines = [
            "Types: deb-src" if ln.strip().startswith("Types:") else ln
            for ln in stanza.splitlines()
            if not ln.startswith("#")
        ]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def ensure_deb_src() -> bool:
    """Add a deb-src entry for the main archive when none exists; True if added."""
    if _deb_src_line_present():
        return False
    main = Path("/etc/apt/sources.list.d/debian.sources")
    if main.exists():
        entry = deb_src_entry(main.read_text())
    else:
        entry = ("Types: deb-src\nURIs: http://deb.debian.org/debian\n"
                 "Suites: bookworm bookworm-updates\nComponents: main\n"
                 "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    DEB_SRC_FILE.write_text(entry)
    log.info("added %s", DEB_SRC_FILE)
    return True


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
    added_src = ensure_deb_src()
    missing = missing_packages(packages)
    if missing or added_src:
        log.info("apt-get update")
        _apt(["update", "-q"])
    if missing:
        log.info("apt-get install %s", " ".join(missing))
        _apt(["install", "-y", "-q", "--no-install-recommends", *missing])
    return missing
