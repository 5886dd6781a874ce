"""Fixtures for tests that run in a Xen dom0 (see tests/conftest.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyxen
from pyxen.lab.contract import protocol
from pyxen.lab.contract.tinyguest import tinyguest_path
from pyxen.xenstore import XenStore

#: Every domain these tests create is named with this prefix (and the pid, so
#: two runs on one host do not meet); nothing else is ever touched.
PREFIX = f"pxt{os.getpid() % 100000}-"


def on_stock() -> bool:
    """Whether the in-dom0 runner booted stock Xen and stock's toolstack
    (it sets ``protocol.ENV_VARIANT`` to the variant it booted): tests that
    show a stock defect the series fixes expect the defect there."""
    return os.environ.get(protocol.ENV_VARIANT) == "stock"


def in_dom0() -> bool:
    try:
        return "control_d" in Path("/proc/xen/capabilities").read_text()
    except OSError:
        return False


@pytest.fixture(scope="session")
def host() -> Iterator[pyxen.Host]:
    if not in_dom0():
        pytest.fail("--xen host needs to run in a Xen dom0 (no control_d in "
                    "/proc/xen/capabilities)")
    with pyxen.Host() as h:
        yield h
        # Leave nothing behind, whatever the tests did.
        for d in h.domains():
            if d.name.startswith(PREFIX):
                d.destroy()


@pytest.fixture(scope="session")
def kernel() -> Path:
    k = tinyguest_path()
    if not k.exists():
        pytest.fail(f"tiny guest not built: {k} (pip install .)")
    return k


def ours(host: pyxen.Host) -> dict[str, int]:
    """Our domains: name -> domid."""
    return {d.name: d.domid for d in host.domains() if d.name.startswith(PREFIX)}


def _subtree(xs: XenStore, path: str, limit: int = 8) -> list[str]:
    """Up to ``limit`` nodes below ``path``, relative to it (to say what a
    leftover holds)."""
    found: list[str] = []
    todo = [""]
    while todo and len(found) < limit:
        rel = todo.pop()
        try:
            children = xs.directory(f"{path}/{rel}".rstrip("/"))
        except pyxen.XenstoreError:     # removed meanwhile
            continue
        for c in sorted(children, reverse=True):
            child = f"{rel}/{c}".lstrip("/")
            found.append(child)
            todo.append(child)
    return sorted(found)[:limit]


def xenstore_leftovers(host: pyxen.Host, domids: set[int]) -> list[str]:
    """Xenstore nodes that still exist for domains that are gone, each with
    (some of) the nodes it holds."""
    xs = host.xenstore
    return [f"{p} {_subtree(xs, p)}" for d in sorted(domids)
            for p in (f"/local/domain/{d}", f"/libxl/{d}") if xs.exists(p)]


def wait_for(pred, timeout: float, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def domids(host: pyxen.Host) -> set[int]:
    """The IDs of every domain Xen knows, dying ones included."""
    return {d.domid for d in host.xc.domains()}


def none_added(host: pyxen.Host, before: set[int], timeout: float = 10) -> bool:
    """Whether, within ``timeout`` s, Xen knows no domain that was not in
    ``before`` (domids() taken earlier): a failed create must not leave a
    half-made domain.  A subset, not equality: one of ``before`` may finish
    dying meanwhile (an earlier test's, held by xenconsoled's mapping)."""
    return wait_for(lambda: domids(host) <= before, timeout)


PV_TYPE = 'type = "pv"'


def pvh_config(pv_config: str) -> str:
    """An xl config of a PV guest (DomainConfig.to_xl_config()) made PVH.
    The tiny guest is a PV kernel (no PVH entry point), so a PVH build of it
    fails when libxl loads the kernel: tests use it for what happens before
    that (the lock file, the paging pool), under Xen's HVM support (SVM and
    HAP under QEMU TCG)."""
    if pv_config.count(PV_TYPE) != 1:
        raise ValueError(f"not a PV xl config with one {PV_TYPE!r} line")
    return pv_config.replace(PV_TYPE, 'type = "pvh"')


@pytest.fixture(scope="session")
def helpers() -> type[Helpers]:
    return Helpers


class Helpers:
    """The helpers above, for test modules (which cannot import conftest)."""

    PREFIX = PREFIX
    ours = staticmethod(ours)
    xenstore_leftovers = staticmethod(xenstore_leftovers)
    wait_for = staticmethod(wait_for)
    domids = staticmethod(domids)
    none_added = staticmethod(none_added)
    on_stock = staticmethod(on_stock)
    pvh_config = staticmethod(pvh_config)
