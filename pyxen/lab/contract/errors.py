"""Typed errors of the lab.  Every one carries a message fit for a user."""

from __future__ import annotations


def describe(exc: BaseException) -> str:
    """An unexpected exception as one error line of a run's result: its type
    and message ("KeyError: 'x'")."""
    return f"{type(exc).__name__}: {exc}"


class LabError(Exception):
    """Base class: something the lab could not do."""


class MissingHostPackage(LabError):
    """Host packages are missing; one line naming them and the install command."""

    def __init__(self, packages: list[str]) -> None:
        self.packages = list(packages)
        names = " ".join(self.packages)
        super().__init__(
            f"missing host package{'s' if len(self.packages) > 1 else ''}: {names}; "
            f"install with 'apt-get install {names}' "
            f"(or 'python -m pyxen.lab deps --install')"
        )


class PatchError(LabError):
    """A patch of the series does not apply; names the patch and the failing hunk."""

    def __init__(self, patch: str, detail: str) -> None:
        self.patch = patch
        self.detail = detail
        super().__init__(f"patch {patch} does not apply: {detail}")


class BuildError(LabError):
    """A build step failed; carries the tail of its log."""

    def __init__(self, step: str, log_tail: str, log_path: str) -> None:
        self.step = step
        self.log_tail = log_tail
        self.log_path = log_path
        super().__init__(f"{step} failed (full log: {log_path}):\n{log_tail}")


class BootError(LabError):
    """Xen or dom0 did not come up; carries the tail of the serial log."""

    def __init__(self, reason: str, serial_tail: str) -> None:
        self.reason = reason
        self.serial_tail = serial_tail
        super().__init__(f"{reason}\n--- serial log (tail) ---\n{serial_tail}")


class BootTimeout(BootError):
    """dom0 was not up within the boot timeout (a hang, not a failure)."""


class Dom0Timeout(LabError):
    """A dom0 command ran past its timeout; the VM has been killed."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        self.argv = argv
        self.timeout = timeout
        super().__init__(
            f"dom0 command {argv!r} still running after {timeout:g} s: VM killed"
        )
