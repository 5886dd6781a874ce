"""A thin wrapper over the ``xl`` command for use inside the lab's dom0.

pyxen's bindings drive libxl directly (the benchmark's default driver).  This
wrapper is for what goes through unmodified ``xl``, as users run it: the
benchmark's ``--driver xl`` and the autoballoon tests (whose subject is xl's
own ballooning and lock file); its parsers of ``xl list`` and ``xl info``
also serve the nested tests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyxen.lab.contract.errors import LabError


class XlError(LabError):
    """``xl`` failed; carries its arguments, exit status and message."""

    def __init__(self, args: list[str], returncode: int, message: str) -> None:
        self.xl_args = args  # (Exception.args is taken)
        self.returncode = returncode
        self.message = message
        super().__init__(f"xl {' '.join(args)} exited {returncode}: {message}")


def xl(*args: str, timeout: float = 300.0, env: Mapping[str, str] | None = None) -> str:
    """Run ``xl args``; its output.  ``env``: variables added to this process's.
    XlError when it fails, and when it runs longer than ``timeout`` seconds
    (it is killed then: a create may have left a half-built domain)."""
    try:
        proc = subprocess.run(["xl", *args], capture_output=True, text=True,
                              timeout=timeout, check=False,
                              env=dict(os.environ, **env) if env else None)
    except subprocess.TimeoutExpired as exc:
        raise XlError(list(args), -1, f"timed out after {timeout:g} s") from exc
    if proc.returncode != 0:
        raise XlError(list(args), proc.returncode, (proc.stderr or proc.stdout).strip())
    return proc.stdout


@dataclass(frozen=True)
class DomainRow:
    name: str
    domid: int
    memory_mib: int
    vcpus: int
    state: str


def parse_list(text: str) -> list[DomainRow]:
    """Rows of ``xl list`` output."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 6:
            continue
        # Name may not contain spaces (xl refuses them), so the split is safe.
        rows.append(DomainRow(parts[0], int(parts[1]), int(parts[2]), int(parts[3]),
                              parts[4]))
    return rows


def list_domains() -> list[DomainRow]:
    """``xl list`` as rows."""
    return parse_list(xl("list"))


def parse_info(text: str) -> dict[str, str]:
    """``xl info`` output as key -> value."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def xen_commandline() -> list[str]:
    """The words of Xen's command line (``xl info`` xen_commandline)."""
    info = parse_info(xl("info"))
    if "xen_commandline" not in info:
        raise LabError("xl info has no xen_commandline line")
    return info["xen_commandline"].split()


def free_memory_mib() -> int:
    """Xen's free memory (``xl info`` free_memory), in MiB."""
    info = parse_info(xl("info"))
    if "free_memory" not in info:
        raise LabError("xl info has no free_memory line")
    return int(info["free_memory"])


def create(config_file: Path) -> None:
    xl("create", "-q", str(config_file))


def destroy(name: str) -> None:
    xl("destroy", name)
