"""Time spent holding and waiting for xl's global create lock, sampled from
/proc/locks in dom0.

Autoballooning ``xl create`` takes an fcntl write lock on xl.conf's
``lockfile`` (default below) for the whole build in stock Xen.  With
patches/4.22/tools/0003, creates protected by a memory claim take it shared
(read locks on bytes 1 and 0, byte 1 being a turnstile) and restore,
migrate-receive, soft reset and claim_mode=0 take it exclusive (write locks
on both bytes); with 0017, creates holding it shared also take byte 2
(BALLOON_BYTE) exclusive for a few calls at a time, to look at free memory
and ask dom0 for more as one step: not the create lock, so not counted
here.  The kernel lists every
POSIX lock in /proc/locks, a line per holder and a ``->`` line per blocked
waiter, keyed by ``major:minor:inode`` of the file, so sampling it counts
waiters without touching xl: how long creates queued on the lock, measured
the same way for both variants.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyxen.lab.contract.errors import LabError, describe

#: xl.conf's default ``lockfile`` (XL_LOCK_FILE; the lab does not change it).
XL_LOCKFILE = Path("/var/lock/xl")
PROC_LOCKS = Path("/proc/locks")
#: The bytes of the lock file that make xl's create lock: the lock proper
#: (0) and the turnstile (1).  Byte 2 is xl's BALLOON_BYTE.
CREATE_LOCK_BYTES = (0, 1)


def file_id(path: Path) -> str | None:
    """``major:minor:inode`` as /proc/locks prints it, or None if no file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"


def parse_proc_locks(text: str, fid: str) -> tuple[int, int]:
    """(holders, waiters) of xl's create lock on the file ``fid`` in
    /proc/locks text: locks and requests covering CREATE_LOCK_BYTES.

    Lines look like ``1: POSIX  ADVISORY  WRITE 123 fd:01:42 0 EOF``; a
    waiter's line has ``->`` after the ordinal.
    """
    return _holders_and_waiters(_create_lock_entries(text, fid))


def _create_lock_entries(text: str, fid: str) -> list[LockEntry]:
    return [e for e in lock_entries(text, fid) if e.covers_create_lock()]


def _holders_and_waiters(entries: list[LockEntry]) -> tuple[int, int]:
    waiters = sum(e.waiting for e in entries)
    return len(entries) - waiters, waiters


@dataclass(frozen=True)
class LockEntry:
    """One /proc/locks line of a file: a held lock, or (``waiting``) a
    blocked request for one.  ``end`` is inclusive; None means to EOF."""
    waiting: bool
    type: str  # "READ" or "WRITE"
    pid: int
    start: int
    end: int | None

    def covers(self, byte: int) -> bool:
        return self.start <= byte and (self.end is None or byte <= self.end)

    def covers_create_lock(self) -> bool:
        """Whether this is (part of) xl's create lock, not its balloon byte."""
        return any(self.covers(b) for b in CREATE_LOCK_BYTES)


def lock_entries(text: str, fid: str) -> list[LockEntry]:
    """The locks held and waited for on the file ``fid`` in /proc/locks text."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if fid not in fields:
            continue
        waiting = len(fields) > 1 and fields[1] == "->"
        rest = fields[2:] if waiting else fields[1:]
        # rest: kind, ADVISORY/MANDATORY, type, pid, fid, start, end
        if len(rest) < 7 or rest[4] != fid:
            continue
        try:
            pid, start = int(rest[3]), int(rest[5])
            end = None if rest[6] == "EOF" else int(rest[6])
        except ValueError:
            continue
        entries.append(LockEntry(waiting, rest[2], pid, start, end))
    return entries


@dataclass
class LockUse:
    """What the sampler saw: seconds with the lock held (``excl_held_s``:
    held by a write lock, i.e. exclusive), summed seconds of all waiters (two
    waiters for 1 s count 2 s), the most waiters at once."""
    held_s: float = 0.0
    wait_s: float = 0.0
    max_waiters: int = 0
    samples: int = 0
    excl_held_s: float = 0.0


class LockSampler:
    """Samples the lock every ``interval`` seconds in a thread while in a
    ``with`` block; ``use`` holds the totals."""

    def __init__(self, path: Path = XL_LOCKFILE, interval: float = 0.02,
                 proc_locks: Path = PROC_LOCKS) -> None:
        self.path = path
        self.interval = interval
        self.proc_locks = proc_locks
        self.use = LockUse()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xl-lock-sampler", daemon=True)
        #: What stopped the sampler early (raised again by __exit__).
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._sample()
        except BaseException as exc:  # kept for __exit__: totals would be partial
            self.error = exc

    def _sample(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            dt, last = now - last, now
            self.use.samples += 1
            fid = file_id(self.path)  # xl creates the file when it first locks
            if fid is None:
                continue  # no file: nobody holds or waits for the lock
            text = self.proc_locks.read_text()
            entries = _create_lock_entries(text, fid)   # parsed once a sample
            holders, waiters = _holders_and_waiters(entries)
            if holders:
                self.use.held_s += dt
            if any(e.type == "WRITE" and not e.waiting and e.covers(CREATE_LOCK_BYTES[0])
                   for e in entries):
                self.use.excl_held_s += dt
            self.use.wait_s += waiters * dt
            self.use.max_waiters = max(self.use.max_waiters, waiters)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None and exc_type is None:
            raise LabError(f"xl lock sampler stopped early: {describe(self.error)}") \
                from self.error
