"""pyxen's C bindings compiled against a staged toolstack.

libxenctrl and libxenlight change ABI between releases and our patches add
sysctls, so in dom0 pyxen must use bindings built from the staged Xen's own
headers, not the host's libxen-dev.  The same builder meson uses emits the C
source; it is compiled here with the staged headers and libraries, cached by
a key over the binding sources, the toolstack key and the Python ABI, and
loaded in dom0 through PYXEN_NATIVE (pyxen._native).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from pyxen._ffi import build as ffibuild
from pyxen.lab import paths
from pyxen.lab.errors import BuildError


def native_key(tools_key: str) -> str:
    material = "\0".join([ffibuild.cdef_source(), ffibuild.c_preamble(), tools_key,
                          sys.version, str(sysconfig.get_config_var("EXT_SUFFIX"))])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def build_native(tools_root: Path, tools_key: str) -> Path:
    """The path of pyxen._xen built for the staged toolstack at ``tools_root``."""
    out_dir = paths.builds_dir() / f"native-{native_key(tools_key)}"
    so = out_dir / f"_xen{sysconfig.get_config_var('EXT_SUFFIX')}"
    if so.exists():
        return so
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "_xen.c"
    ffibuild.emit(src)
    libdir = tools_root / "usr" / "lib"
    argv = [os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2",
            f"-I{sysconfig.get_paths()['include']}", f"-I{tools_root / 'usr' / 'include'}",
            str(src), f"-L{libdir}", f"-Wl,-rpath-link,{libdir}",
            *[f"-l{lib}" for lib in ffibuild.LIBRARIES], "-o", str(so) + ".tmp"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    log = out_dir / "build.log"
    log.write_text(" ".join(argv) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BuildError("compiling pyxen._xen against the staged toolstack",
                         "\n".join((proc.stdout + proc.stderr).splitlines()[-20:]), str(log))
    os.replace(str(so) + ".tmp", so)
    return so


def scrubd_source() -> Path:
    """scrubd.c as installed with the package (meson copies scrubd/scrubd.c)."""
    return paths.package_data("scrubd.c")


def build_scrubd(tools_root: Path, tools_key: str) -> Path | None:
    """scrubd compiled against the staged toolstack, or None when that
    toolstack has no XEN_SYSCTL_scrub_op (stock Xen: patches/0004 adds
    xc_scrub_get)."""
    header = tools_root / "usr" / "include" / "xenctrl.h"
    if "xc_scrub_get" not in header.read_text(errors="replace"):
        return None
    src = scrubd_source()
    key = hashlib.sha256(src.read_bytes() + tools_key.encode()).hexdigest()[:16]
    out_dir = paths.builds_dir() / f"scrubd-{key}"
    exe = out_dir / "scrubd"
    if exe.exists():
        return exe
    out_dir.mkdir(parents=True, exist_ok=True)
    libdir = tools_root / "usr" / "lib"
    argv = [os.environ.get("CC", "cc"), "-O2", "-Wall", "-Wextra", "-Werror",
            f"-I{tools_root / 'usr' / 'include'}", str(src), f"-L{libdir}",
            f"-Wl,-rpath-link,{libdir}", "-lxenctrl", "-o", str(exe) + ".tmp"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    log = out_dir / "build.log"
    log.write_text(" ".join(argv) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BuildError("compiling scrubd against the staged toolstack",
                         "\n".join((proc.stdout + proc.stderr).splitlines()[-20:]), str(log))
    os.replace(str(exe) + ".tmp", exe)
    return exe
