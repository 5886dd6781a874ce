"""Other tenants' guests for a storm (StormRequest.running): N idle tiny
guests, up before the timed storm starts and until the counting storm ends.

They are created the way the storm's driver creates its own guests, so that
what a running guest costs a create is what it costs on a real host: with
``xl`` each keeps its ``xl`` monitor process, and with it a Xenstore
connection of its own; with either driver each guest has its ring
connection in xenstored and its nodes under /local/domain.  xenstored's open
files are counted with none and with all of them up (its connections, plus
a few listening sockets and files).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyxen.config import DomainConfig
from pyxen.errors import XenError
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError, describe
from pyxen.lab.dom0.drivers import (CONSOLE_WAIT_S, VANISH_WAIT_S, Driver, destroy_listed,
                                    wait_console)
from pyxen.lab.dom0.proccpu import find_pids, open_fds

log = logging.getLogger(__name__)

#: Creates (and destroys) of tenants in flight at once: they are set-up,
#: not measured, and a few at a time is what a host's toolstack sees.
TENANT_CONCURRENCY = 4


def xenstored_fds() -> int | None:
    """xenstored's open files (None when it is not found, e.g. in a stub domain)."""
    pid = find_pids(("xenstored",)).get("xenstored")
    try:
        return open_fds(pid) if pid is not None else None
    except OSError:
        return None


@dataclass
class Tenants:
    """The running guests and what starting them measured."""

    names: list[str]
    up: list[str] = field(default_factory=list)
    start_s: float = 0.0
    xenstored_fds_without: int | None = None
    xenstored_fds_with: int | None = None
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"count": len(self.names), "up": len(self.up),
                "start_s": round(self.start_s, 3),
                "xenstored_fds_without": self.xenstored_fds_without,
                "xenstored_fds_with": self.xenstored_fds_with}


def _each(names: list[str], op: Any, what: str, errors: list[str]) -> list[str]:
    """``op(name)`` for every name, TENANT_CONCURRENCY at once; the names it
    succeeded for (failures recorded in ``errors``)."""
    done: list[str] = []

    def one(name: str) -> None:
        try:
            op(name)
            done.append(name)
        except (XenError, LabError) as exc:
            errors.append(f"{what} {name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any failure is that guest's, the rest go on
            errors.append(f"{what} {name}: {describe(exc)}")

    with ThreadPoolExecutor(max_workers=TENANT_CONCURRENCY) as pool:
        list(pool.map(one, names))
    return done


def names_for(prefix: str, count: int) -> list[str]:
    """The names of ``count`` tenants of a storm named ``prefix``."""
    return [f"{prefix}r{i}" for i in range(count)]


def start(driver: Driver, count: int, kernel: Path, memory_mib: int, prefix: str,
          workdir: Path, storm_mib: int) -> Tenants:
    """Create ``count`` idle guests named ``prefix r<i>`` and wait for their
    consoles.  LabError before any create if they and the storm's own
    guests (``storm_mib`` in all) cannot fit in free memory; a create that
    fails or a guest that never prints its line is an error of the run."""
    t = Tenants(names=names_for(prefix, count))
    if not count:
        return t
    need = count * (memory_mib + protocol.GUEST_OVERHEAD_MIB) + storm_mib
    free = driver.free_memory_mib()
    if need > free:
        raise LabError(f"{count} running guests of {memory_mib} MiB and the storm's "
                       f"{storm_mib} MiB need about {need} MiB, and Xen has {free} MiB "
                       "free: raise the VM's memory (--memory) or lower --running")
    t.xenstored_fds_without = xenstored_fds()
    workdir.mkdir(parents=True, exist_ok=True)
    configs = {}
    for name in t.names:
        config = DomainConfig(name=name, kernel=kernel, memory_mib=memory_mib)
        path = workdir / f"{name}.cfg"
        path.write_text(config.to_xl_config())
        configs[name] = (config, path)
    t0 = time.monotonic()
    created = _each(t.names, lambda n: driver.create(*configs[n]), "create tenant", t.errors)
    seen = wait_console(created, CONSOLE_WAIT_S)
    t.start_s = time.monotonic() - t0
    t.up = [n for n in t.names if seen.get(n)]
    t.errors += [f"tenant {n} did not print its line in {CONSOLE_WAIT_S:.0f} s"
                 for n in created if not seen[n]]
    t.xenstored_fds_with = xenstored_fds()
    log.info("%d of %d running guests up in %.1f s; xenstored's open files %s -> %s",
             len(t.up), count, t.start_s, t.xenstored_fds_without, t.xenstored_fds_with)
    return t


def stop(driver: Driver, t: Tenants) -> list[str]:
    """Destroy every tenant still listed (those whose create failed too:
    libxl may have left them half-built), TENANT_CONCURRENCY at once; the
    names still listed after VANISH_WAIT_S.  Errors go to ``t.errors``."""
    done = destroy_listed(driver, set(t.names).__contains__, VANISH_WAIT_S,
                          "destroy tenant", workers=TENANT_CONCURRENCY, whose="the tenants")
    t.errors.extend(done.errors)
    return sorted(done.left)
