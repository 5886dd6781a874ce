"""The xl lock sampler, on real fcntl locks of this machine's kernel."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from pyxen.lab.dom0.xllock import LockEntry, LockSampler, file_id, lock_entries, parse_proc_locks

SAMPLE = """\
1: POSIX  ADVISORY  WRITE 812 00:19:4711 0 EOF
1: -> POSIX  ADVISORY  WRITE 813 00:19:4711 0 EOF
1: -> POSIX  ADVISORY  WRITE 814 00:19:4711 0 EOF
2: FLOCK  ADVISORY  WRITE 77 fd:01:4711 0 EOF
3: POSIX  ADVISORY  WRITE 90 00:19:47110 0 EOF
"""


def test_parse_counts_holder_and_waiters_of_that_file_only():
    assert parse_proc_locks(SAMPLE, "00:19:4711") == (1, 2)
    assert parse_proc_locks(SAMPLE, "00:19:47110") == (1, 0)
    assert parse_proc_locks(SAMPLE, "00:19:1") == (0, 0)
    assert parse_proc_locks("", "00:19:4711") == (0, 0)


def test_parse_leaves_out_xl_s_balloon_byte():
    """Byte 2 (xl's BALLOON_BYTE, a few calls at a time) is not the create
    lock: neither its holder nor its waiters count."""
    text = ("1: POSIX  ADVISORY  READ 812 00:19:4711 0 0\n"
            "2: POSIX  ADVISORY  WRITE 813 00:19:4711 2 2\n"
            "2: -> POSIX  ADVISORY  WRITE 814 00:19:4711 2 2\n"
            "3: -> POSIX  ADVISORY  WRITE 815 00:19:4711 1 1\n")
    assert parse_proc_locks(text, "00:19:4711") == (1, 1)
    balloon = LockEntry(False, "WRITE", 813, 2, 2)
    assert not balloon.covers_create_lock()
    assert LockEntry(False, "WRITE", 1, 0, None).covers_create_lock()   # old xl's whole file
    assert LockEntry(True, "WRITE", 1, 1, 1).covers_create_lock()       # the turnstile


def test_lock_entries_give_type_owner_and_byte_range():
    text = SAMPLE + ("4: POSIX  ADVISORY  READ 91 00:19:4711 0 0\n"
                     "4: -> POSIX  ADVISORY  READ 92 00:19:4711 1 1\n")
    assert lock_entries(text, "00:19:4711") == [
        LockEntry(False, "WRITE", 812, 0, None),
        LockEntry(True, "WRITE", 813, 0, None),
        LockEntry(True, "WRITE", 814, 0, None),
        LockEntry(False, "READ", 91, 0, 0),
        LockEntry(True, "READ", 92, 1, 1),
    ]
    assert lock_entries(text, "00:19:1") == []


def test_lock_entries_of_this_kernel_for_a_byte_lock(tmp_path):
    lock = tmp_path / "xl"
    lock.touch()
    with open(lock, "r+") as f:
        fcntl.lockf(f, fcntl.LOCK_SH, 1, 1)
        fid = file_id(lock)
        assert fid is not None
        mine = lock_entries(Path("/proc/locks").read_text(), fid)
    assert LockEntry(False, "READ", os.getpid(), 1, 1) in mine


def test_file_id_of_missing_file_is_none(tmp_path):
    assert file_id(tmp_path / "nope") is None


def _hold(path: str, seconds: float, ready) -> None:  # type: ignore[no-untyped-def]
    with open(path, "w") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        ready.set()
        time.sleep(seconds)


def _wait(path: str) -> None:
    with open(path, "w") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)  # blocks while _hold has it


def _start_holder(ctx, target, lock, seconds: float):  # type: ignore[no-untyped-def]
    """A process running ``target(lock, seconds, ready)``, once it holds the lock."""
    ready = ctx.Event()
    holder = ctx.Process(target=target, args=(str(lock), seconds, ready))
    holder.start()
    assert ready.wait(10)
    return holder


def test_sampler_sees_a_held_lock_and_a_blocked_waiter(tmp_path):
    lock = tmp_path / "xl"
    lock.touch()
    ctx = multiprocessing.get_context("fork")
    with LockSampler(lock, interval=0.01) as sampler:
        holder = _start_holder(ctx, _hold, lock, 1.5)
        waiter = ctx.Process(target=_wait, args=(str(lock),))
        waiter.start()
        holder.join(10)
        waiter.join(10)
    assert sampler.use.max_waiters == 1
    # The waiter queued for most of the holder's 1.5 s.
    assert 0.5 < sampler.use.wait_s < 3.0
    assert sampler.use.held_s > 1.0
    assert sampler.use.excl_held_s > 1.0


def _hold_shared(path: str, seconds: float, ready, balloon: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Hold byte 0 shared (as patched xl's claim-mode creates do) and, with
    ``balloon``, byte 2 exclusive (xl's BALLOON_BYTE, not the create lock)."""
    with open(path, "r+") as f:
        fcntl.lockf(f, fcntl.LOCK_SH, 1, 0)
        if balloon:
            fcntl.lockf(f, fcntl.LOCK_EX, 1, 2)
        ready.set()
        time.sleep(seconds)


def _hold_shared_and_balloon(path: str, seconds: float, ready) -> None:  # type: ignore[no-untyped-def]
    _hold_shared(path, seconds, ready, balloon=True)


@pytest.mark.parametrize("holder_fn", [_hold_shared, _hold_shared_and_balloon],
                         ids=["shared", "shared-and-balloon-byte"])
def test_sampler_tells_a_shared_lock_from_an_exclusive_one(tmp_path, holder_fn):
    lock = tmp_path / "xl"
    lock.touch()
    ctx = multiprocessing.get_context("fork")
    with LockSampler(lock, interval=0.01) as sampler:
        holder = _start_holder(ctx, holder_fn, lock, 1.0)
        holder.join(10)
    assert sampler.use.held_s > 0.5
    assert sampler.use.excl_held_s == 0.0


def test_sampler_of_an_unused_lock_counts_nothing(tmp_path):
    lock = tmp_path / "xl"
    lock.touch()
    with LockSampler(lock, interval=0.01) as sampler:
        time.sleep(0.2)
    assert sampler.use.samples > 0
    assert (sampler.use.held_s, sampler.use.wait_s, sampler.use.max_waiters) == (0.0, 0.0, 0)


def test_sampler_of_a_lock_file_never_created_counts_samples_only(tmp_path):
    with LockSampler(tmp_path / "never", interval=0.01) as sampler:
        time.sleep(0.2)
    assert sampler.use.samples > 0
    assert (sampler.use.held_s, sampler.use.wait_s) == (0.0, 0.0)
