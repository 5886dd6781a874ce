"""dom0's Xenstore caching proxy as the benchmarks see it: its counters
(over its control socket) and its process, when the lab started it in front
of xenstored (``+cache`` variants)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pyxen.lab.contract import protocol
from xenstore_cache.control import query_control


class ProxyCounter:
    """Requests clients sent through dom0's xenstore_cache (its control socket)."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self.last = 0

    @classmethod
    def from_env(cls) -> ProxyCounter | None:
        """The proxy this dom0 runs, None when it runs none."""
        path = os.environ.get(protocol.ENV_XS_CACHE_CONTROL)
        return cls(Path(path)) if path else None

    def stats(self) -> dict[str, Any]:
        return asyncio.run(query_control(self.control))

    def take(self) -> int:
        """Requests since the last call."""
        now = int(self.stats()["requests"])
        delta, self.last = now - self.last, now
        return delta

    @staticmethod
    def pid(ready_file: Path = Path(protocol.XS_CACHE_READY)) -> int:
        """The proxy's process ID: its ready file holds it.  RuntimeError
        when the file is missing or holds no process ID."""
        try:
            text = ready_file.read_text().strip()
        except OSError as exc:
            raise RuntimeError(f"no xenstore-cache ready file: {exc}") from exc
        if not text.isdigit():
            raise RuntimeError(f"{ready_file} holds no process ID: {text[:40]!r}")
        return int(text)
