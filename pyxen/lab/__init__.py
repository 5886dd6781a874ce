"""The nested Xen lab: build Xen from source, boot it in QEMU, run work in dom0."""

from pyxen.lab.contract.errors import (
    BootError,
    BuildError,
    Dom0Timeout,
    LabError,
    MissingHostPackage,
    PatchError,
)

__all__ = [
    "BootError",
    "BuildError",
    "Dom0Timeout",
    "LabError",
    "MissingHostPackage",
    "PatchError",
]
