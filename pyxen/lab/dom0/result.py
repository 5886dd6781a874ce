"""How a dom0 driver hands its result back: ``result.json`` in the
directory the host named (``protocol.ENV_OUT``), its errors on stderr, and
the exit status the host reads (1: the run finished and lists errors)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pyxen.lab.contract import protocol


def hand_back(result: dict[str, Any]) -> int:
    """Write ``result`` (which has an ``errors`` list) and return the exit status."""
    out = Path(os.environ.get(protocol.ENV_OUT, "."))
    (out / protocol.RESULT_FILE).write_text(json.dumps(result, indent=2))
    for e in result["errors"]:
        print(f"error: {e}", file=sys.stderr)
    return 1 if result["errors"] else 0
