"""Configurations of the tiny test guests, validated and rendered as xl config."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Names the lab gives guests: what libxl and xl accept and are safe everywhere
#: they end up (xl config quoting, Xenstore paths, file names).  All-digit names
#: are refused because xl would read them as domain ids.
NAME_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")

#: Smallest memory a tiny guest is created with (its image, page tables, rings).
MIN_MEMORY_MIB = 4
MAX_VCPUS = 128


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(
            f"invalid domain name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "not starting with '-'")
    if name.isdigit():
        raise ValueError(f"invalid domain name {name!r}: all digits reads as a domain id")
    return name


@dataclass(frozen=True)
class GuestConfig:
    """A PV guest running ``kernel`` (the tiny guest by default)."""

    name: str
    kernel: Path
    memory_mib: int = 16
    vcpus: int = 1

    def __post_init__(self) -> None:
        validate_name(self.name)
        if not isinstance(self.memory_mib, int) or isinstance(self.memory_mib, bool):
            raise ValueError(  # noqa: TRY004 - configuration errors are ValueErrors
                f"memory_mib must be an integer, got {self.memory_mib!r}")
        if self.memory_mib < MIN_MEMORY_MIB:
            raise ValueError(f"memory_mib must be >= {MIN_MEMORY_MIB}, got {self.memory_mib}")
        if not isinstance(self.vcpus, int) or not 1 <= self.vcpus <= MAX_VCPUS:
            raise ValueError(f"vcpus must be an integer 1..{MAX_VCPUS}, got {self.vcpus!r}")
        k = str(self.kernel)
        if not Path(k).is_absolute():
            raise ValueError(f"kernel must be an absolute path, got {k!r}")
        if any(c in k for c in '"\\\n\r'):
            raise ValueError(f"kernel path {k!r} has a character xl config cannot hold")

    def render(self) -> str:
        """The xl configuration file text."""
        return "\n".join([
            f'name = "{self.name}"',
            'type = "pv"',
            f'kernel = "{self.kernel}"',
            f"memory = {self.memory_mib}",
            f"maxmem = {self.memory_mib}",
            f"vcpus = {self.vcpus}",
            'on_poweroff = "destroy"',
            'on_reboot = "destroy"',
            # A crash stays visible (state 'c') instead of vanishing.
            'on_crash = "preserve"',
            "",
        ])
