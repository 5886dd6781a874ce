"""pyxen's C bindings compiled against a staged toolstack.

libxenctrl and libxenlight change ABI between releases and our patches add
sysctls, so in dom0 pyxen must use bindings built from the staged Xen's own
headers, not the host's libxen-dev.  The same builder meson uses emits the C
source; it is compiled here with the staged headers and libraries, cached by
a key over the binding sources, the toolstack key, the Python ABI and the
compiler command ($CC), and loaded in dom0 through PYXEN_NATIVE (pyxen._native).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from pyxen._ffi import build as ffibuild
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import BuildError, LabError
from pyxen.lab.host import paths


def compiler() -> list[str]:
    """The C compiler command: ``$CC`` split as a shell would ("gcc -m64"), else cc."""
    cc = os.environ.get("CC", "")
    try:
        return shlex.split(cc) or ["cc"]
    except ValueError as exc:       # an unclosed quote
        raise LabError(f"$CC {cc!r} cannot be read as a command: {exc}") from None


def native_key(tools_key: str) -> str:
    material = "\0".join([ffibuild.cdef_source(), ffibuild.c_preamble(), tools_key,
                          sys.version, str(sysconfig.get_config_var("EXT_SUFFIX")),
                          shlex.join(compiler())])
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
    _compile(tools_root, ["-shared", "-fPIC", "-O2", f"-I{sysconfig.get_paths()['include']}"],
             src, list(ffibuild.LIBRARIES), so, "pyxen._xen")
    return so


def build_xs_domain_preload(tools_root: Path, tools_key: str) -> Path:
    """The lab's xs-domain-preload.so (pyxen/lab/data/xs-domain-preload.c)
    compiled against the staged toolstack: in dom0, LD_PRELOAD it with
    PYXEN_XS_DOMAIN=1 and the domains a program creates are Xenstore
    domains (XSM_XS_PRIV), for the tests of what a stub domain can do."""
    src = paths.package_data(protocol.XS_DOMAIN_PRELOAD.replace(".so", ".c"))
    return _compile_cached(tools_root, tools_key, src, protocol.XS_DOMAIN_PRELOAD,
                           ["-shared", "-fPIC"], ["xenctrl", "dl"])


def _compile_cached(tools_root: Path, tools_key: str, src: Path, name: str,
                    flags: list[str], libs: list[str]) -> Path:
    """builds/<stem of name>-<key>/<name>: ``src`` compiled once (``_compile``,
    warnings as errors) for the staged toolstack, keyed by the source and
    the toolstack's key and the compiler command."""
    material = src.read_bytes() + tools_key.encode() + shlex.join(compiler()).encode()
    key = hashlib.sha256(material).hexdigest()[:16]
    out = paths.builds_dir() / f"{Path(name).stem}-{key}" / name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    _compile(tools_root, [*flags, "-O2", "-Wall", "-Wextra", "-Werror"], src, libs, out, name)
    return out


def _compile(tools_root: Path, flags: list[str], src: Path, libs: list[str], out: Path,
             what: str) -> None:
    """cc against the staged toolstack's headers and libraries; the command and
    its output go to build.log next to ``out``, which appears only on success."""
    libdir = tools_root / "usr" / "lib"
    argv = [*compiler(), *flags, f"-I{tools_root / 'usr' / 'include'}",
            str(src), f"-L{libdir}", f"-Wl,-rpath-link,{libdir}",
            *[f"-l{lib}" for lib in libs], "-o", str(out) + ".tmp"]
    log = out.parent / "build.log"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:   # no such compiler, not executable
        log.write_text(shlex.join(argv) + "\n" + str(exc) + "\n")
        raise BuildError(f"compiling {what} against the staged toolstack",
                         f"cannot run the compiler {shlex.join(compiler())} ($CC): {exc}",
                         str(log)) from exc
    log.write_text(shlex.join(argv) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BuildError(f"compiling {what} against the staged toolstack",
                         "\n".join((proc.stdout + proc.stderr).splitlines()[-20:]), str(log))
    os.replace(str(out) + ".tmp", out)


def scrubd_source() -> Path:
    """scrubd.c as installed with the package (meson copies scrubd/scrubd.c),
    or the checkout's scrubd/scrubd.c when running from the source tree."""
    installed = paths.package_data("scrubd.c")
    if installed.exists():
        return installed
    checkout = paths.repo_root() / "scrubd" / "scrubd.c"
    if checkout.exists():
        return checkout
    raise LabError(f"scrubd.c not found: neither {installed} (installed package) "
                   f"nor {checkout} (source checkout)")


def build_scrubd(tools_root: Path, tools_key: str) -> Path | None:
    """scrubd compiled against the staged toolstack, or None when that
    toolstack has no XEN_SYSCTL_scrub_op (stock Xen: the hypervisor
    series' scrub sysctl adds xc_scrub_get)."""
    header = tools_root / "usr" / "include" / "xenctrl.h"
    if "xc_scrub_get" not in header.read_text(errors="replace"):
        return None
    return _compile_cached(tools_root, tools_key, scrubd_source(), "scrubd", [], ["xenctrl"])
