"""What the lab builds and boots: an upstream Xen source release (a release
tarball or a Xen tree) and Debian's ``linux-image-amd64`` kernel as PV dom0.

The Xen source is chosen by ``--xen-source`` or ``$PYXEN_XEN_SOURCE``
(:data:`SOURCE_ENV`); a tarball's SHA-256 is verified against
``--xen-sha256`` / ``$PYXEN_XEN_SHA256`` when given, else against
:data:`KNOWN_TARBALLS` when its file name is listed there.  Without either,
the lab looks for the default release's tarball in its cache's ``sources/``
folder and otherwise says where to get it.  Each source is extracted (or
copied) once into the cache, under its version and digest, so builds of
different releases and exports live side by side.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import paths

log = logging.getLogger(__name__)

#: Environment variables naming the Xen source and its expected checksum
#: (what --xen-source and --xen-sha256 default to).
SOURCE_ENV = "PYXEN_XEN_SOURCE"
SHA256_ENV = "PYXEN_XEN_SHA256"

#: The release the lab builds when no source is named, and where it is published.
DEFAULT_VERSION = "4.22.0"
RELEASES_URL = "https://downloads.xenproject.org/release/xen/"

#: SHA-256 of release tarballs the lab knows by file name.  These are plain
#: ``git archive`` exports (xz) of the upstream release tags RELEASE-4.22.0
#: (d45d5687f144) and RELEASE-4.20.4 (9611e26eff42); a tarball by another
#: name, or another export of the same tag, needs its sum given explicitly.
KNOWN_TARBALLS: Mapping[str, str] = {
    "xen-4.22.0.tar.xz": "0709a15ce9332a4c35505bad8161c8f56372a910a798a383804a92fc1d72ecf6",
    "xen-4.20.4.tar.xz": "77c8c7d1f250f41d85d76838bf8f0bf7bf8b08f911085d8b58046e39240d2b72",
}

#: File name suffixes of the tarballs accepted (what the Xen Project
#: publishes, and xz exports).
TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2")

KERNEL_METAPACKAGE = "linux-image-amd64"

_STAMP = ".pyxen-extracted"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class XenSource:
    """A pristine Xen tree in the cache and where it came from."""

    tree: Path          # extracted (or copied) into the cache; never built in
    version: str        # "4.22.0", from xen/Makefile
    sha256: str         # of the tarball, or of a tree's files (tree_digest)
    origin: str         # the tarball or tree it was made from
    verified: bool      # sha256 checked against a given or known sum

    @property
    def branch(self) -> str:
        """'4.22.0' -> '4.22': the base a patch series is kept for."""
        return ".".join(self.version.split(".")[:2])

    def describe(self) -> dict[str, object]:
        """What a results file records of the source."""
        return {"xen_version": self.version, "source_sha256": self.sha256,
                "source": Path(self.origin).name, "source_verified": self.verified}


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise LabError(f"{' '.join(argv)} failed:\n{tail}")
    return proc.stdout


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(tree: Path) -> str:
    """SHA-256 over a tree's regular files and symlinks (relative path, mode's
    executable bit, contents or link target), in path order, ``.git`` left out."""
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            p = Path(dirpath) / name
            rel = p.relative_to(tree).as_posix()
            if p.is_symlink():
                h.update(f"L {rel}\0{os.readlink(p)}\0".encode())
            elif p.is_file():
                h.update(f"F {rel} {os.access(p, os.X_OK):d}\0".encode())
                h.update(file_sha256(p).encode())
    return h.hexdigest()


_MAKEFILE_VAR = re.compile(r"^export\s+XEN_(VERSION|SUBVERSION|EXTRAVERSION)\s*\??=\s*(\S*)",
                           re.MULTILINE)


def tree_version(tree: Path) -> str:
    """The Xen version a tree builds ('4.22.0'), read from xen/Makefile."""
    makefile = tree / "xen" / "Makefile"
    try:
        text = makefile.read_text()
    except OSError:
        raise LabError(f"{tree} is not a Xen source tree (no xen/Makefile)") from None
    found = dict(_MAKEFILE_VAR.findall(text))
    if "VERSION" not in found or "SUBVERSION" not in found:
        raise LabError(f"{makefile}: no XEN_VERSION/XEN_SUBVERSION: not a Xen tree?")
    extra = re.sub(r"\$\([^)]*\)", "", found.get("EXTRAVERSION", ""))
    return f"{found['VERSION']}.{found['SUBVERSION']}{extra}"


def check_sha256(text: str) -> str:
    """A checksum as given by the user, normalized; a malformed one is an error."""
    value = text.strip().lower()
    if not _SHA256.fullmatch(value):
        raise ValueError(f"not a SHA-256 checksum (64 hex digits): {text!r}")
    return value


def _missing_source_message() -> str:
    return (f"no Xen source: the lab builds Xen {DEFAULT_VERSION} by default. Get "
            f"xen-{DEFAULT_VERSION}.tar.gz from {RELEASES_URL}{DEFAULT_VERSION}/ (or a tree "
            f"of tag RELEASE-{DEFAULT_VERSION} of xen.git) and name it with --xen-source "
            f"PATH or {SOURCE_ENV}=PATH, or put the tarball in {paths.sources_dir()}/")


def default_source() -> Path:
    """Where the default release's tarball is, if the user named none."""
    for suffix in TARBALL_SUFFIXES:
        candidate = paths.sources_dir() / f"xen-{DEFAULT_VERSION}{suffix}"
        if candidate.is_file():
            return candidate
    raise LabError(_missing_source_message())


def requested(source: Path | None = None, sha256: str | None = None) -> tuple[Path, str | None]:
    """The source and expected checksum the user asked for: the arguments,
    else the environment, else the default release in the cache."""
    if source is None and os.environ.get(SOURCE_ENV):
        source = Path(os.environ[SOURCE_ENV])
    if sha256 is None and os.environ.get(SHA256_ENV):
        sha256 = os.environ[SHA256_ENV]
    if source is None:
        source = default_source()
    if not source.exists():
        raise LabError(f"Xen source {source} does not exist ({_missing_source_message()})")
    return source.resolve(), (check_sha256(sha256) if sha256 else None)


def _expected(source: Path, given: str | None) -> str | None:
    return given if given is not None else KNOWN_TARBALLS.get(source.name)


#: What a damaged compressed tarball raises besides tarfile's own errors (a
#: truncated gzip, xz or bzip2 stream: EOFError; corrupt data: zlib.error,
#: lzma.LZMAError, or OSError from bz2).
_UNPACK_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def _member_top(name: str) -> str:
    """A member's top entry: 'xen-4.22.0' of './xen-4.22.0/xen/Makefile'."""
    while name.startswith("./"):
        name = name[2:]
    return name.split("/", 1)[0]


def _extract(tarball: Path, tmp: Path) -> Path:
    """Unpack a tarball whose members all lie under one top directory into
    ``tmp``; returns that directory.  Unsafe members are refused."""
    try:
        with tarfile.open(tarball) as tf:
            tops = {_member_top(m.name) for m in tf.getmembers()} - {"", "."}
            if len(tops) != 1:
                raise LabError(f"{tarball}: expected one top directory, found "
                               f"{', '.join(sorted(tops)[:5]) or 'none'}")
            tf.extractall(tmp, filter="data")
    except _UNPACK_ERRORS as exc:
        raise LabError(f"cannot unpack {tarball}: {exc or type(exc).__name__}") from exc
    top = tmp / tops.pop()
    if top.is_symlink() or not top.is_dir():
        raise LabError(f"{tarball}: its one top entry {top.name} is not a directory")
    return top


def _unpack(path: Path, tree: Path) -> None:
    """Put the tree of a tarball or a directory at ``tree``, with the lock on
    the sources held: in a temporary directory of this process's own, renamed
    into place as the last step (nothing else in the cache is touched before)."""
    for stale in tree.parent.glob(f"{tree.name}.*tmp"):   # a killed unpack's; the lock is ours
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tree.name}.", suffix=".tmp", dir=tree.parent))
    try:
        if path.is_dir():
            top = tmp / "tree"
            shutil.copytree(path, top, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        else:
            top = _extract(path, tmp)
        shutil.rmtree(tree, ignore_errors=True)   # a stopped unpack's, unstamped
        top.rename(tree)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def xen_source(source: Path | None = None, sha256: str | None = None) -> XenSource:
    """The pristine tree of the requested Xen source, extracted once into the cache.

    A tarball's checksum is verified when one was given or its name is in
    :data:`KNOWN_TARBALLS`; a mismatch is an error naming both sums.  A tree
    is copied (without ``.git``) and identified by :func:`tree_digest`.
    """
    path, given = requested(source, sha256)
    if path.is_dir():
        digest = tree_digest(path)
        if given is not None and given != digest:
            raise LabError(f"Xen tree {path}: its file digest is {digest}, "
                           f"not the {given} that was given")
        verified = given is not None
    elif path.name.endswith(TARBALL_SUFFIXES):
        digest = file_sha256(path)
        expected = _expected(path, given)
        if expected is not None and expected != digest:
            raise LabError(f"checksum mismatch for {path}: expected {expected}, "
                           f"file has {digest}" +
                           ("" if given else " (another export of this release? "
                            "give its sum with --xen-sha256)"))
        verified = expected is not None
        if not verified:
            log.warning("Xen source %s: no checksum given; sha256 %s recorded", path, digest)
    else:
        raise LabError(f"Xen source {path}: neither a directory nor a tarball "
                       f"({', '.join(TARBALL_SUFFIXES)})")
    root = paths.sources_dir()
    root.mkdir(parents=True, exist_ok=True)
    # The version is read after unpacking; the directory is named by digest.
    tree = root / f"xen-{digest[:16]}"
    stamp = tree / _STAMP
    if not stamp.exists():
        # Another lab run may be unpacking the same source: one at a time,
        # and whoever comes second finds the first one's stamp.
        with paths.locked("unpack", root):
            if not stamp.exists():
                log.info("unpacking %s into %s", path, tree)
                _unpack(path, tree)
                stamp.write_text(f"{digest} {path}\n")
    return XenSource(tree=tree, version=tree_version(tree), sha256=digest,
                     origin=str(path), verified=verified)


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


def _fetch_kernel(package: str, dest: Path) -> None:
    """Download and extract ``package`` into ``dest`` (with the kernel lock
    held): in a temporary directory of this process's own, renamed into
    place and stamped as the last steps."""
    for stale in dest.parent.glob(f"{dest.name}.*tmp"):   # a killed fetch's; the lock is ours
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        # mkdtemp's 0700 would become the kernel directory's: the umask's mode,
        # as a directory made in place would have.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        log.info("downloading %s", package)
        _run(["apt-get", "download", "-q", package], cwd=tmp)
        deb = next(tmp.glob("*.deb"), None)
        if deb is None:
            raise LabError(f"apt-get download {package} produced no .deb")
        _run(["dpkg-deb", "-x", str(deb), str(tmp / "root")])
        deb.unlink()
        (tmp / _STAMP).write_text(package + "\n")
        shutil.rmtree(dest, ignore_errors=True)       # a stopped fetch's, unstamped
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dom0_kernel() -> Kernel:
    """The dom0 kernel, downloaded and extracted once into the cache."""
    package = kernel_package_name()
    dest = paths.kernel_dir() / package
    if not (dest / _STAMP).exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Another lab run may be fetching it too: one at a time, and whoever
        # comes second finds the first one's stamp.
        with paths.locked("kernel", dest.parent):
            if not (dest / _STAMP).exists():
                _fetch_kernel(package, dest)
    boot = dest / "root" / "boot"
    vmlinuz = next(boot.glob("vmlinuz-*"), None)
    if vmlinuz is None:
        raise LabError(f"no vmlinuz in {boot}")
    release = vmlinuz.name[len("vmlinuz-"):]
    return Kernel(package, release, vmlinuz, dest / "root" / "lib" / "modules" / release)
