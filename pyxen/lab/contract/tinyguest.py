"""Where the tiny PV guest is: both sides of the lab boot it.

The host passes its path to dom0's benchmark drivers, and the in-dom0 tests
create it themselves; the package layout (meson installs the ELF next to the
``pyxen`` package) is a fact of neither side.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Name of the environment variable that points at another tiny guest ELF.
TINYGUEST_ENV = "PYXEN_TINYGUEST"


def tinyguest_path() -> Path:
    """The tiny PV guest ELF, installed by meson next to the package
    (``PYXEN_TINYGUEST`` overrides)."""
    env = os.environ.get(TINYGUEST_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "guest" / "tinyguest"
