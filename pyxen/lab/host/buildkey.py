"""Cache keys of builds: a digest over every input that changes the output."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Bump when the build recipe (commands, install layout) changes.
RECIPE_VERSION = 2


def patch_digests(patches: Sequence[Path]) -> list[tuple[str, str]]:
    """(file name, sha256 of contents) for each patch, in series order."""
    return [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in patches]


def build_key(component: str, source_sha256: str, patches: Sequence[Path],
              options: Mapping[str, object]) -> str:
    """A short stable key over (component, the source's checksum, the contents
    of every patch in order, build options, recipe version).

    ``options`` holds what else selects the output: configure flags for the
    toolstack, Kconfig settings (debug, lock profiling) for the hypervisor.
    """
    material = {
        "component": component,
        "recipe": RECIPE_VERSION,
        "source": source_sha256,
        "patches": patch_digests(patches),
        "options": options,
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
