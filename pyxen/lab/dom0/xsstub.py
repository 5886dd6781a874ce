"""Xenstore stub domains for the lab's tests and benchmarks, in dom0.

A stub is the tiny guest in its "domctl" mode (guest/main.c): it issues, as
fast as it can and for ever, the domctls that a Xenstore domain's
XSM_XS_PRIV allows (getdomaininfo and get_domain_state of a target domain in
every round and of the first 1024 domain IDs in turn, get_domain_state of
DOMID_INVALID).  xl creates it with the lab's
xs-domain-preload.so (pyxen/lab/data/xs-domain-preload.c) preloaded, which
makes it a Xenstore domain (XEN_DOMCTL_CDF_xs_domain): libxl has no setting
for that, and init-xenstore-domain, which has, also takes dom0's xenbus
backend over.  Its console says when it started, whether Xen let it read
domain 0 (it holds XSM_XS_PRIV) and how many domctls it has made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pyxen.config import DomainConfig
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError
from pyxen.lab.dom0 import xl
from pyxen.lab.dom0.drivers import console_text

#: The tiny guest's command line for the stub (with "=<domid>": its target).
STUB_CMDLINE = "domctl"
_STARTED = re.compile(r"pyxen-tinyguest: domctl version=(\d+) first=(-?\d+)")
_PROGRESS = re.compile(r"pyxen-tinyguest: domctl calls=(\d+) ok=(\d+)")


@dataclass(frozen=True)
class StubStart:
    """What a stub's first console line says."""

    version: int        # the getdomaininfo interface version Xen accepted
    first_rc: int       # getdomaininfo of domain 0: 0 when XSM_XS_PRIV allows it


def preload_path() -> Path:
    """The lab's xs-domain-preload.so in this dom0 (ENV_XS_DOMAIN_PRELOAD)."""
    path = os.environ.get(protocol.ENV_XS_DOMAIN_PRELOAD, "")
    if not path or not Path(path).is_file():
        raise LabError(f"no {protocol.XS_DOMAIN_PRELOAD} at ${protocol.ENV_XS_DOMAIN_PRELOAD} "
                       f"({path!r}): the lab builds it with every toolstack")
    return Path(path)


def start(name: str, kernel: Path, workdir: Path, target: int | None = None) -> int:
    """Create the stub ``name`` with ``xl create`` as a Xenstore domain,
    reading domain ``target`` in every round when given; its domain ID.  Its
    config file is written to ``workdir``."""
    cmdline = STUB_CMDLINE if target is None else f"{STUB_CMDLINE}={target}"
    config = DomainConfig(name, kernel, cmdline=cmdline)
    cfg = workdir / f"{name}.cfg"
    cfg.write_text(config.to_xl_config())
    xl.xl("create", "-q", str(cfg),
          env={"LD_PRELOAD": str(preload_path()), protocol.ENV_XS_DOMAIN: "1"})
    for row in xl.list_domains():
        if row.name == name:
            return row.domid
    raise LabError(f"xl created {name} but does not list it")


def started(name: str) -> StubStart | None:
    """The stub's start line, None before it printed it."""
    m = _STARTED.search(console_text(name))
    return StubStart(int(m.group(1)), int(m.group(2))) if m else None


def calls(name: str) -> int:
    """The domctls the stub last reported having made (0 before its first
    report, every few thousand)."""
    found = _PROGRESS.findall(console_text(name))
    return int(found[-1][0]) if found else 0
