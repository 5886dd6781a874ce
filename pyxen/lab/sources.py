"""Debian sources the lab builds and boots: the ``xen`` source package and the
``linux-image-amd64`` kernel used as PV dom0."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyxen.lab import paths
from pyxen.lab.errors import LabError

log = logging.getLogger(__name__)

#: Debian's Xen source package and the dom0 kernel metapackage.
XEN_SOURCE_PACKAGE = "xen"
KERNEL_METAPACKAGE = "linux-image-amd64"

#: Files Debian's 0001 patch deletes and its build restores from autotools-dev.
AUTOTOOLS_AUX = ("config.guess", "config.sub")
AUTOTOOLS_AUX_DIR = Path("/usr/share/misc")

_STAMP = ".pyxen-extracted"


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise LabError(f"{' '.join(argv)} failed:\n{tail}")
    return proc.stdout


def xen_source_version() -> str:
    """The version of Debian's ``xen`` source package apt would fetch."""
    out = _run(["apt-cache", "showsrc", XEN_SOURCE_PACKAGE])
    versions = re.findall(r"^Version: (\S+)$", out, flags=re.MULTILINE)
    if not versions:
        raise LabError(
            "apt knows no 'xen' source package: add a deb-src entry for the main "
            "archive and run apt-get update ('python -m pyxen.lab deps --install' does both)"
        )
    return str(max(versions, key=_debian_version_key))


def _debian_version_key(v: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", v)]


def upstream_version(debian_version: str) -> str:
    """'4.17.5+72-g01140da4e8-1' -> '4.17.5+72-g01140da4e8' (drop the Debian revision)."""
    return debian_version.rsplit("-", 1)[0] if "-" in debian_version else debian_version


def xen_source_tree() -> tuple[Path, str]:
    """A pristine extracted Xen tree (Debian patches applied) and its version.

    Fetched and extracted once into the cache; later calls return it as is.
    """
    version = xen_source_version()
    root = paths.sources_dir()
    tree = root / f"xen-{upstream_version(version)}"
    if (tree / _STAMP).exists():
        return tree, version
    root.mkdir(parents=True, exist_ok=True)
    if tree.exists():
        shutil.rmtree(tree)
    log.info("fetching Debian source package xen %s", version)
    _run(["apt-get", "source", "--download-only", "-q", f"{XEN_SOURCE_PACKAGE}={version}"],
         cwd=root)
    dsc = next(root.glob(f"xen_{upstream_version(version).split(':')[-1]}*.dsc"), None)
    if dsc is None:
        raise LabError(f"apt-get source left no .dsc for xen {version} in {root}")
    _run(["dpkg-source", "--no-check", "-x", dsc.name, tree.name], cwd=root)
    for name in AUTOTOOLS_AUX:
        src = AUTOTOOLS_AUX_DIR / name
        if not src.exists():
            raise LabError(f"{src} missing: install autotools-dev")
        shutil.copy2(src, tree / name)
    (tree / _STAMP).write_text(version + "\n")
    return tree, version


@dataclass(frozen=True)
class Kernel:
    """An extracted Debian kernel package usable as PV dom0."""

    package: str
    release: str
    vmlinuz: Path
    modules: Path  # .../lib/modules/<release>


def kernel_package_name() -> str:
    """The concrete linux-image package the metapackage depends on."""
    out = _run(["apt-cache", "depends", KERNEL_METAPACKAGE])
    m = re.search(r"Depends: (linux-image-\S+)", out)
    if not m:
        raise LabError(f"cannot resolve {KERNEL_METAPACKAGE} to a kernel package")
    return m.group(1)


def dom0_kernel() -> Kernel:
    """The dom0 kernel, downloaded and extracted once into the cache."""
    package = kernel_package_name()
    dest = paths.kernel_dir() / package
    if not (dest / _STAMP).exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        log.info("downloading %s", package)
        _run(["apt-get", "download", "-q", package], cwd=dest)
        deb = next(dest.glob("*.deb"), None)
        if deb is None:
            raise LabError(f"apt-get download {package} produced no .deb")
        _run(["dpkg-deb", "-x", str(deb), str(dest / "root")])
        deb.unlink()
        (dest / _STAMP).write_text(package + "\n")
    boot = dest / "root" / "boot"
    vmlinuz = next(boot.glob("vmlinuz-*"), None)
    if vmlinuz is None:
        raise LabError(f"no vmlinuz in {boot}")
    release = vmlinuz.name[len("vmlinuz-"):]
    return Kernel(package, release, vmlinuz, dest / "root" / "lib" / "modules" / release)
