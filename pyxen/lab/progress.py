"""Progress display for long lab work (rich when on a terminal, logging otherwise)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

log = logging.getLogger(__name__)

#: The lab's one console (stderr, so stdout stays for results).
console = Console(stderr=True)


@contextmanager
def step(description: str) -> Iterator[None]:
    """Show a spinner with elapsed time while a long step runs; log when done."""
    start = time.monotonic()
    if console.is_terminal:
        with console.status(f"{description} ...", spinner="dots"):
            yield
    else:
        log.info("%s ...", description)
        yield
    log.info("%s: done in %.1f s", description, time.monotonic() - start)


def interactive() -> bool:
    """True when progress bars make sense (stderr is a terminal)."""
    return sys.stderr.isatty()
