"""One benchmark driver run in each variant's own boot: what the
benchmarks that compare variants share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host.progress import step
from pyxen.lab.host.provenance import describe_build
from pyxen.lab.host.variants import RunVariant
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild


def run_each(boots: list[tuple[RunVariant, StagedBuild]], options: VMOptions, label: str,
             drive: Callable[[Dom0], dict[str, Any]],
             empty: dict[str, Any]) -> list[dict[str, Any]]:
    """Boot each variant's build in turn, with the variant's dom0 switches
    (``+cache``: the proxy in front of xenstored), and ``drive`` its dom0:
    one run per variant, named as the variant, its build described.  A
    variant whose VM or driver fails with LabError does not stop the others:
    its run is ``empty`` with the error in ``errors``."""
    runs: list[dict[str, Any]] = []
    for variant, staged in boots:
        try:
            with step(f"{label} on {variant.name}"), \
                    Dom0(staged, variant.vm_options(options)) as dom0:
                result = drive(dom0)
        except LabError as exc:
            result = {**empty, "errors": [str(exc)]}
        runs.append({"variant": variant.name, **describe_build(staged), **result})
    return runs
