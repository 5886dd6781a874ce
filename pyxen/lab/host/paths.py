"""Where the lab keeps things.  Every path the lab's host side uses is defined
here once; the tiny guest's, which dom0 needs as well, in the contract."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyxen.lab.contract.errors import LabError

# dom0's tests need the tiny guest too, so its path lives in the contract.
from pyxen.lab.contract.tinyguest import tinyguest_path as tinyguest_path

#: Name of the environment variable that relocates the lab's cache.
CACHE_ENV = "PYXEN_CACHE"


def cache_root() -> Path:
    """Root of the lab's cache: sources, builds, kernels (PYXEN_CACHE overrides).

    Always absolute: dom0 runs chrooted with / as its working directory and
    finds the staged builds at their host paths.  A relative PYXEN_CACHE is
    taken from the current directory; a relative XDG_CACHE_HOME is ignored,
    as the XDG base directory specification says."""
    env = os.environ.get(CACHE_ENV)
    if env:
        # Absolute, symbolic links kept: a link is how a user gives QEMU a
        # path without the spaces or commas its target may hold.
        return Path(os.path.abspath(os.path.expanduser(env)))
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "pyxen"


@contextmanager
def locked(name: str, directory: Path | None = None) -> Iterator[None]:
    """Hold the lab's lock ``name`` (an flock on ``directory/.name.lock``,
    by default in :func:`builds_dir`): two lab runs must not build, or
    unpack, the same cache entry at once."""
    root = directory or builds_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sources_dir() -> Path:
    """Xen source tarballs (the default release is looked for here) and the
    pristine trees extracted from them."""
    return cache_root() / "sources"


def builds_dir() -> Path:
    """Staged builds, one directory per cache key."""
    return cache_root() / "builds"


def kernel_dir() -> Path:
    """The extracted dom0 kernel package."""
    return cache_root() / "kernel"


def runs_dir() -> Path:
    """Per-VM exchange directories (shared with dom0 over 9p)."""
    return cache_root() / "runs"


def repo_root() -> Path:
    """The source tree holding ``patches/`` (this checkout), if there is one."""
    return Path(__file__).resolve().parents[3]


def patches_dir() -> Path:
    """The project's patch series, one directory per Xen branch."""
    return repo_root() / "patches"


def package_data(name: str) -> Path:
    """A file shipped in ``pyxen/lab/data``."""
    return Path(__file__).resolve().parents[1] / "data" / name


#: The function-invocation trace shipped with the project (with its README,
#: which credits its source): in the checkout, and installed by meson as
#: package data under ``traces/``.
SAMPLE_TRACE = "data/traces/azure2021-sample-200.csv"


def sample_trace() -> Path:
    """The shipped trace: the installed package's, else the checkout's this
    pyxen runs from; LabError saying to pass --trace if neither is there."""
    name = Path(SAMPLE_TRACE).name
    places = [package_data(f"traces/{name}"), repo_root() / SAMPLE_TRACE]
    for place in places:
        if place.is_file():
            return place
    raise LabError(f"the sample trace is not installed (no {' or '.join(map(str, places))}): "
                   "pass --trace FILE")
