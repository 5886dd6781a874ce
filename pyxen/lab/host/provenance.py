"""What a results file records of where its figures came from: the Xen
source (version, checksum), the patch series and the project's own commit."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from pyxen.lab.host import paths
from pyxen.lab.host.xenbuild import StagedBuild


def project_commit(where: Path | None = None) -> str:
    """The git commit of the project checkout at ``where`` (default: the
    current directory, else the package's checkout), with ``+dirty`` when
    tracked files differ from it; ``unknown`` outside a checkout."""
    for place in ([where] if where is not None else [Path.cwd(), paths.repo_root()]):
        try:
            head = subprocess.run(["git", "-C", str(place), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, check=False)
            if head.returncode != 0:
                continue
            dirty = subprocess.run(["git", "-C", str(place), "status", "--porcelain",
                                    "--untracked-files=no"],
                                   capture_output=True, text=True, check=False)
        except OSError:  # no git on this machine
            break
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    return "unknown"


@functools.cache
def run_commit() -> str:
    """project_commit() as this process first saw it: every variant of one
    run records the commit the run started from, even if the checkout moves
    on while it runs (the running code does not)."""
    return project_commit()


def describe_build(staged: StagedBuild) -> dict[str, Any]:
    """The provenance fields of one variant's results."""
    v = staged.variant
    return {
        **v.source.describe(),
        "series": {"xen": [p.name for p in v.xen_patches],
                   "tools": [p.name for p in v.tools_patches]},
        "patches": [p.name for p in v.patches],
        "instrumentation": [p.name for p in v.instrumentation],
        "hypervisor_key": staged.hypervisor_key,
        "tools_key": staged.tools_key,
        "project_commit": run_commit(),
    }
