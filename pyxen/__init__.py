"""pyxen: fast parallel guest birth and death for Xen.

    with pyxen.Host() as host:
        dom = host.create(pyxen.DomainConfig(name="tg-1", kernel=Path("/srv/tinyguest")))
        dom.destroy()

Subpackages and modules:
  pyxen.host, pyxen.config   the Pythonic layer (Host, Domain, DomainConfig)
  pyxen.xenctrl, pyxen.libxl, pyxen.xenstore   thin wrappers of each C library
  pyxen.errors               typed exceptions carrying errno and the library's message
  pyxen.lab                  the nested Xen lab (python -m pyxen.lab)

The C bindings are loaded on first use of Host, XenCtrl, Libxl or XenStore, so
``pyxen.config`` and ``pyxen.lab`` work on machines without Xen's libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyxen.config import DomainConfig
from pyxen.errors import (
    DomainNotFound,
    LibxlError,
    TransactionConflict,
    XenCtrlError,
    XenError,
    XenstoreError,
)

if TYPE_CHECKING:
    from pyxen.host import Domain, Host
    from pyxen.xenctrl import ScrubPolicy, ScrubState

__version__ = "0.1.0"

__all__ = [
    "Domain",
    "DomainConfig",
    "DomainNotFound",
    "Host",
    "LibxlError",
    "ScrubPolicy",
    "ScrubState",
    "TransactionConflict",
    "XenCtrlError",
    "XenError",
    "XenstoreError",
]


def __getattr__(name: str) -> Any:
    if name in ("Host", "Domain"):
        from pyxen import host
        return getattr(host, name)
    if name in ("ScrubPolicy", "ScrubState"):
        from pyxen import xenctrl
        return getattr(xenctrl, name)
    raise AttributeError(name)
