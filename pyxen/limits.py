"""The ranges Xen's interfaces accept, checked before a value reaches C
(where an out-of-range int would be truncated or overflow): one check per
kind of value, each a ValueError saying what the value must be."""

from __future__ import annotations

#: The first domain ID Xen reserves (DOMID_FIRST_RESERVED): guests are below.
DOMID_FIRST_RESERVED = 0x7FF0
#: Xen's page size on x86 (XC_PAGE_SIZE): memory is counted in these.
PAGE_SIZE = 4096
#: Pages in a MiB of guest memory.
PAGES_PER_MIB = (1 << 20) // PAGE_SIZE


def below(value: int, limit: int, what: str) -> int:
    """``value`` if an int (not a bool) in 0 .. limit - 1; else ValueError
    saying ``what`` it must be."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
        raise ValueError(f"{what}, got {value!r}")
    return value


def unsigned(value: int, bits: int, name: str) -> int:
    """``value`` if it fits a C unsigned integer of ``bits`` bits."""
    return below(value, 1 << bits, f"{name} must be an integer 0..2^{bits} - 1")


def mfn(value: int) -> int:
    return below(value, 1 << 52, "mfn must be a machine frame number (0 .. 2^52 - 1)")


def domid(value: int) -> int:
    return below(value, DOMID_FIRST_RESERVED,
                 f"domid must be an integer 0..{DOMID_FIRST_RESERVED - 1}")


def evtchn_port(value: int) -> int:
    """An event channel port: 1 .. 2^32 - 1 (port 0 is never bound)."""
    if below(value, 1 << 32, "event channel port must be an integer 1..2^32 - 1") == 0:
        raise ValueError("event channel port must be an integer 1..2^32 - 1, got 0")
    return value
