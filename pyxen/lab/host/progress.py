"""Progress display for long lab work (rich when on a terminal, logging otherwise).

rich is imported on first use, so that modules importing this one (the build
code, the CLI) still import on a machine where only the standard library is
there yet ("python -m pyxen.lab deps --install").
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)


#: Width a results table is printed at when stdout is not a terminal (a log
#: file, a pipe); the tables are made to fit it.
TABLE_WIDTH = 100


def print_table(table: Any) -> None:
    """A results table on stdout: at the terminal's width, or at TABLE_WIDTH
    in a log file or pipe (rich would take 80 columns there, and cut
    headers and names)."""
    from rich.console import Console
    (Console() if sys.stdout.isatty() else Console(width=TABLE_WIDTH)).print(table)


@functools.cache
def console() -> Console:
    """The lab's one progress console (stderr, so stdout stays for results)."""
    from rich.console import Console
    return Console(stderr=True)


def say(message: str) -> None:
    """A line for the user on the progress console, as written: no rich
    markup (a path may hold brackets) and no wrapping (a path a user copies
    stays on one line, whatever the width)."""
    console().print(message, markup=False, highlight=False, soft_wrap=True)


#: The long steps this process finished (description, seconds), in order:
#: what a slow run spent its time on (builds, boots), for a summary.
_FINISHED: list[tuple[str, float]] = []


def record_step(description: str, seconds: float) -> None:
    """Note a finished long step and log its time."""
    _FINISHED.append((description, seconds))
    log.info("%s: done in %.1f s", description, seconds)


def finished_steps() -> list[tuple[str, float]]:
    """The long steps this process has finished so far, in order."""
    return list(_FINISHED)


#: The long steps under way, outermost first, and the innermost one an
#: interrupt (KeyboardInterrupt, SIGTERM) stopped.
_RUNNING: list[str] = []
_INTERRUPTED: list[str] = []


def current_step() -> str | None:
    """The innermost long step under way, if any."""
    return _RUNNING[-1] if _RUNNING else None


def interrupted_step() -> str | None:
    """The innermost long step an interrupt stopped, else the one under
    way (None: the interrupt came outside every step)."""
    return _INTERRUPTED[0] if _INTERRUPTED else current_step()


@contextmanager
def step(description: str) -> Iterator[None]:
    """Show a spinner with elapsed time while a long step runs; log and
    record (finished_steps) its time when done."""
    start = time.monotonic()
    con = console()
    _RUNNING.append(description)
    try:
        if con.is_terminal:
            with con.status(f"{description} ...", spinner="dots"):
                yield
        else:
            log.info("%s ...", description)
            yield
    except KeyboardInterrupt:
        if not _INTERRUPTED:        # the innermost step sees it first
            _INTERRUPTED.append(description)
        raise
    finally:
        _RUNNING.pop()
    record_step(description, time.monotonic() - start)
