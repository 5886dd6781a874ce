"""How the lab's dom0 benchmarks create, watch and destroy tiny guests: the
drivers (``xl`` processes, or pyxen from threads of one process), the
guests' console lines, and waiting for destroyed guests to go."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pyxen.config import DomainConfig
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError, describe
from pyxen.lab.dom0 import xl

#: The line the tiny guest prints (guest/main.c BANNER).
GUEST_BANNER = "pyxen-tinyguest: up"

#: How long a guest gets to print its line, and destroyed domains to vanish.
CONSOLE_WAIT_S = 120.0
VANISH_WAIT_S = 120.0


def console_log(name: str) -> Path:
    return Path(os.environ.get(protocol.ENV_CONSOLE_LOG_DIR, protocol.CONSOLE_LOG_DIR)) \
        / f"guest-{name}.log"


def console_text(name: str) -> str:
    """What guest ``name`` has printed so far ("" before its log exists)."""
    try:
        return console_log(name).read_text(errors="replace")
    except OSError:
        return ""


def wait_console(names: list[str], timeout: float, poll_s: float = 0.2) -> dict[str, bool]:
    """Which guests have printed the banner within ``timeout`` seconds
    (their logs looked at every ``poll_s``)."""
    deadline = time.monotonic() + timeout
    seen = {n: False for n in names}
    while True:
        for n in names:
            if not seen[n]:
                seen[n] = GUEST_BANNER in console_text(n)
        if all(seen.values()) or time.monotonic() > deadline:
            return seen
        time.sleep(poll_s)


class Driver(Protocol):
    """How the benchmark creates and destroys domains."""

    name: str

    def create(self, config: DomainConfig, config_file: Path) -> None: ...
    def destroy(self, name: str) -> None: ...
    def names(self) -> set[str]: ...
    def free_memory_mib(self) -> int: ...


class XlDriver:
    """Unmodified ``xl`` processes, as a user at a shell runs them."""

    name = "xl"

    def create(self, config: DomainConfig, config_file: Path) -> None:
        xl.create(config_file)

    def destroy(self, name: str) -> None:
        xl.destroy(name)

    def names(self) -> set[str]:
        return {d.name for d in xl.list_domains()}

    def free_memory_mib(self) -> int:
        return xl.free_memory_mib()


class PyxenDriver:
    """pyxen (libxl through cffi) from threads of this one process."""

    name = "pyxen"

    def __init__(self) -> None:
        import pyxen
        self.host = pyxen.Host(xs_cache=os.environ.get(protocol.ENV_LIB_CACHE) == "1")
        self.host.open()
        self.domids: dict[str, int] = {}
        self.lock = threading.Lock()

    def create(self, config: DomainConfig, config_file: Path) -> None:
        dom = self.host.create(config)
        with self.lock:
            self.domids[config.name] = dom.domid

    def destroy(self, name: str) -> None:
        with self.lock:
            domid = self.domids.get(name)
        if domid is None:
            # Not created through this driver, or its create raised: the
            # domain may still be there (a clean-up destroys what is listed).
            domid = next((d.domid for d in self.host.domains() if d.name == name), None)
            if domid is None:   # its create failed (recorded then): an error, not a crash
                raise LabError(f"{name} was not created: nothing to destroy")
        self.host.xl.destroy(domid)
        with self.lock:     # forgotten once destroyed: a failed destroy may be tried again
            if self.domids.get(name) == domid:
                del self.domids[name]

    def names(self) -> set[str]:
        return {d.name for d in self.host.domains()}

    def free_memory_mib(self) -> int:
        return self.host.free_memory_mib()


#: The drivers by name (the contract's STORM_DRIVERS, which StormRequest checks).
DRIVERS: dict[str, Callable[[], Driver]] = {"pyxen": PyxenDriver, "xl": XlDriver}


def wait_unlisted(driver: Driver, wanted: Callable[[str], bool], timeout: float,
                  last: frozenset[str]) -> tuple[frozenset[str], Exception | None]:
    """Wait up to ``timeout`` seconds for no listed name to be one ``wanted``
    takes.  Returns the names still listed (empty when all are gone) and
    None, or, when a listing fails, what the last listing that worked found
    (``last`` before the first) and the listing's exception."""
    deadline = time.monotonic() + timeout
    left = last
    while True:
        try:
            left = frozenset(n for n in driver.names() if wanted(n))
        except Exception as exc:  # noqa: BLE001 - handed back to the caller
            return left, exc
        if not left or time.monotonic() > deadline:
            return left, None
        time.sleep(0.2)


def wait_vanished(driver: Driver, names: set[str], timeout: float) -> set[str]:
    """Names still listed after ``timeout`` seconds (empty when all are
    gone); a listing that fails raises."""
    left, exc = wait_unlisted(driver, names.__contains__, timeout, frozenset(names))
    if exc is not None:
        raise exc
    return set(left)


@dataclass(frozen=True)
class Destroyed:
    """What destroy_listed() did: the guests it found listed (and asked to
    be destroyed), those still listed at its end, and what went wrong."""

    found: frozenset[str]
    left: frozenset[str]
    errors: tuple[str, ...]


def destroy_listed(driver: Driver, wanted: Callable[[str], bool], timeout: float,
                   what: str = "destroy", workers: int = 1, prefix: str = "",
                   whose: str = "the guests") -> Destroyed:
    """Destroy every listed guest whose name ``wanted`` takes, ``workers``
    at once, each whatever became of the others, then wait up to
    ``timeout`` seconds for those ``wanted`` takes to go: a benchmark's
    clean-up, which never raises.  Errors, each starting with ``prefix``: a
    destroy that failed (``"<what> <name>: <exception>"``, in the order of
    the names), a listing of ``whose`` that failed (then ``left`` is what
    the last listing that worked found)."""
    try:
        found = frozenset(n for n in driver.names() if wanted(n))
    except Exception as exc:  # noqa: BLE001 - a clean-up reports, never raises
        return Destroyed(frozenset(), frozenset(),
                         (f"{prefix}cannot list {whose} to destroy them: {describe(exc)}",))
    failed: dict[str, str] = {}

    def one(name: str) -> None:
        try:
            driver.destroy(name)
        except Exception as exc:  # noqa: BLE001 - the others are destroyed all the same
            failed[name] = f"{prefix}{what} {name}: {describe(exc)}"

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, sorted(found)))
    else:
        for name in sorted(found):
            one(name)
    errors = [failed[n] for n in sorted(failed)]
    left, listing = wait_unlisted(driver, wanted, timeout, found)
    if listing is not None:
        errors.append(f"{prefix}cannot list {whose} left: {describe(listing)}")
    return Destroyed(found, left, tuple(errors))
