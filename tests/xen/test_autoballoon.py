"""Autoballooning creates that together need more memory than dom0 can give
(the toolstack series' memory claims instead of xl's global lock).

Runs in the dom0 of a lab booted without ``dom0_mem``
(tests/nested/test_autoballoon_in_dom0.py): dom0 owns all memory, and every
``xl create`` balloons it down for the new guest.  Stock xl serialises those
creates under its global lock file; patched xl runs them concurrently and
protects each build's memory with a hypervisor claim, building again when its
claim loses.  Either way, the creates that do not fit must fail cleanly,
leaving nothing behind, and every create that succeeds must have built an
intact guest: it boots and reports all of its pages.

Patched xl still orders creates against restores with its lock file: a
claim-mode create takes it shared, a restore (migrate-receive, soft reset,
claim_mode=0) exclusive, through a turnstile byte that stops new creates
while a restore waits.  The last tests play the restore's part with fcntl
locks of their own.

``PYXEN_EXPECT_XL_LOCK`` (set by the runner: 1 for stock, 0 for patched)
says which lock xl's creates take: 1, the lock file exclusive (a write lock
on the whole file); 0, never exclusive: claim-mode creates take it shared.
"""

from __future__ import annotations

import fcntl
import os
import queue
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyxen.config import DomainConfig
from pyxen.lab.dom0 import xl
from pyxen.lab.dom0.drivers import console_text
from pyxen.lab.dom0.xllock import XL_LOCKFILE, LockEntry, LockSampler, file_id, lock_entries

pytestmark = [pytest.mark.xen, pytest.mark.autoballoon]

GUEST_MIB = 384
#: libxl refuses dom0 balloon targets below this (LIBXL_MIN_DOM0_MEM).
DOM0_MIN_MIB = 128
#: What libxl_domain_need_memory adds to a PV guest's memory (maxmem slack,
#: page tables), and rounding: a guest "fits" when GUEST_MIB + this is there.
NEED_SLACK_MIB = 4
BANNER = re.compile(r"pyxen-tinyguest: up, nr_pages=(\d+)")


@dataclass
class Outcome:
    name: str
    returncode: int
    stderr: str
    seconds: float

    @property
    def attempts(self) -> int:
        """Tries of this create: patched xl tries again each time a claim loses."""
        return 1 + self.stderr.count("memory claim failed")


def _xl_create(path: Path, delay_s: float = 0.0) -> Outcome:
    time.sleep(delay_s)
    t0 = time.monotonic()
    proc = subprocess.run(["xl", "create", "-q", str(path)], capture_output=True,
                          text=True, timeout=900, check=False)
    return Outcome(path.stem, proc.returncode, proc.stderr, time.monotonic() - t0)


def _nr_pages(name: str, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = BANNER.search(console_text(name))
        if m:
            return int(m.group(1))
        time.sleep(0.2)
    return None


def _dom0_target_mib(host) -> int:  # type: ignore[no-untyped-def]
    """dom0's balloon target (what libxl checks against its minimum); until
    libxl first sets it, dom0 has no target node and its memory is it."""
    path = "/local/domain/0/memory/target"
    if not host.xenstore.exists(path):
        return host.domain(0).info().memory_mib
    return int(host.xenstore.read(path)) // 1024


def _give_dom0_its_memory_back(host) -> None:  # type: ignore[no-untyped-def]
    """Raise dom0's target to all but a few MiB of free memory (an earlier
    test's guests gave theirs to Xen, not to dom0) and wait for its balloon
    driver to take it, so that creates balloon dom0 down again."""
    free = host.free_memory_mib()
    dom0_mib = host.domain(0).info().memory_mib
    xl.xl("mem-set", "0", f"{dom0_mib + free - 8}m")
    deadline = time.monotonic() + 180.0
    while host.free_memory_mib() >= 16:
        if time.monotonic() > deadline:
            pytest.fail(f"dom0 took back only {free - host.free_memory_mib()} of {free} MiB "
                        "in 180 s")
        time.sleep(1.0)


@pytest.fixture
def autoballoon_host(host):  # type: ignore[no-untyped-def]
    """The host, checked to be in autoballoon mode (Xen booted without dom0_mem)."""
    words = xl.xen_commandline()
    if any(w.startswith("dom0_mem") for w in words):
        pytest.fail(f"Xen was booted with dom0_mem ({' '.join(words)}): "
                    "not autoballoon mode")
    return host


#: When each of the creates starts (their index -> seconds).  A create that
#: starts while dom0 still gives back memory that others asked for must
#: count that memory as theirs, not ask dom0 for it again: every run starts
#: all but the last together and the last 2 s later (a late starter, for
#: the cost of one); scheduled runs also start them 2 s apart (as long again:
#: about 25 s of a 2-pCPU lab's time, 90 s at a third of the CPU).
LATE_S = 2.0
STARTS: dict[str, Callable[[int, int], float]] = {
    "together-one-late": lambda i, count: LATE_S if i == count - 1 else 0.0,
    "2s-apart": lambda i, count: i * LATE_S,
}


@pytest.mark.parametrize("starts", ["together-one-late",
                                    pytest.param("2s-apart", marks=pytest.mark.scheduled)])
def test_overcommitted_concurrent_creates_fail_cleanly(autoballoon_host, kernel, helpers,
                                                       tmp_path, starts):
    host = autoballoon_host
    if host.free_memory_mib() >= GUEST_MIB:
        _give_dom0_its_memory_back(host)
    target0 = _dom0_target_mib(host)
    if host.free_memory_mib() >= GUEST_MIB:
        pytest.fail(f"{host.free_memory_mib()} MiB free before any create: dom0 does "
                    "not own the memory, so the creates would not balloon")
    total_mib = host.physinfo().total_pages // 256
    # More guests than could fit even with dom0 ballooned to its minimum.
    count = total_mib // GUEST_MIB + 2
    paths = []
    for i in range(count):
        cfg = DomainConfig(name=f"{helpers.PREFIX}ab{i}", kernel=kernel, memory_mib=GUEST_MIB)
        path = tmp_path / f"{cfg.name}.cfg"
        path.write_text(cfg.to_xl_config())
        paths.append(path)

    with LockSampler() as sampler, ThreadPoolExecutor(max_workers=count) as pool:
        outcomes = list(pool.map(_xl_create, paths,
                                 [STARTS[starts](i, count) for i in range(count)]))
    print(f"xl lock: held {sampler.use.held_s:.1f} s, waited {sampler.use.wait_s:.1f} s, "
          f"at most {sampler.use.max_waiters} waiting")
    for o in outcomes:
        print(f"{o.name}: rc={o.returncode} {o.seconds:.1f} s, {o.attempts} attempt(s) "
              f"{o.stderr.strip().splitlines()[-3:] if o.returncode else ''}")
    print(f"attempts: {sum(o.attempts for o in outcomes)} for {count} creates")

    print(f"dom0's target {target0} MiB before; after: {host.free_memory_mib()} MiB free, "
          f"dom0 {host.domain(0).info().memory_mib} MiB (target "
          f"{_dom0_target_mib(host)} MiB)")

    live = {d.name: d for d in host.domains()}
    ok = [o for o in outcomes if o.returncode == 0]
    failed = [o for o in outcomes if o.returncode != 0]
    try:
        # Every success is an intact guest: running, with all its memory, and
        # it booted and counted every page it was given.
        for o in ok:
            assert o.name in live, f"{o.name}: xl create succeeded but no such domain"
            assert live[o.name].info().tot_pages >= GUEST_MIB * 256, o.name
            assert _nr_pages(o.name, 120.0) == GUEST_MIB * 256, \
                f"{o.name} did not boot with its {GUEST_MIB * 256} pages"
        # Every failure is for want of memory, says so, and left no domain.
        for o in failed:
            assert o.name not in live, f"{o.name}: failed create left its domain behind"
            assert "memory" in o.stderr, f"{o.name} failed, not for memory:\n{o.stderr}"
        assert ok, "no create succeeded: the host could hold some guests"
        assert failed, f"all {count} creates succeeded in {total_mib} MiB"
        # The failures were real: what is left (free memory, and what dom0 could
        # still give above libxl's minimum) cannot hold one more guest.
        left = host.free_memory_mib() + _dom0_target_mib(host) - DOM0_MIN_MIB
        assert left < GUEST_MIB + NEED_SLACK_MIB, \
            f"{len(failed)} creates failed with {left} MiB still obtainable"
        # dom0 was ballooned down for the guests built (and less than half a
        # guest more): never twice for one shortfall, which can take it to
        # libxl's minimum and, with its root file system in memory, out of
        # memory, while what it gave sits free.
        given = target0 - _dom0_target_mib(host)
        assert given <= len(ok) * (GUEST_MIB + NEED_SLACK_MIB) + GUEST_MIB // 2, \
            f"dom0 ballooned down by {given} MiB for {len(ok)} guests of {GUEST_MIB} MiB"
        # No claim outlives its build; no Xenstore node outlives its domain.
        assert host.physinfo().outstanding_pages == 0
        domids = {d.domid for d in host.domains()}
        stale = [d for d in host.xenstore.directory("/local/domain") if int(d) not in domids]
        assert not stale, f"Xenstore /local/domain entries of no domain: {stale}"
        expect_lock = os.environ.get("PYXEN_EXPECT_XL_LOCK")
        if expect_lock == "0":
            assert sampler.use.samples > 0 and sampler.use.excl_held_s == 0.0, \
                "patched xl took its global create lock exclusive for a claim-mode create"
            assert sampler.use.held_s > 0.0, \
                "patched xl's claim-mode creates never took the lock file shared"
        elif expect_lock == "1":
            assert sampler.use.excl_held_s > 0.0, "stock xl never took its create lock"
    finally:
        free_before = host.free_memory_mib()
        for o in ok:
            if o.name in live:
                live[o.name].destroy()
        ours = {o.name for o in ok}
        assert helpers.wait_for(lambda: not (ours & set(helpers.ours(host))), 120.0)
    # The guests' memory went back to Xen, none kept by a dead domain.
    assert helpers.wait_for(
        lambda: host.free_memory_mib() >= free_before + len(ok) * GUEST_MIB, 60.0), \
        f"free {host.free_memory_mib()} MiB after destroying {len(ok)} guests, " \
        f"{free_before} before"


def test_create_after_overcommit_succeeds(autoballoon_host, kernel, helpers, tmp_path):
    """One more create after the over-commit succeeds: the failures above left
    neither a claim nor a lock nor dom0's balloon in the way."""
    host = autoballoon_host
    cfg = DomainConfig(name=f"{helpers.PREFIX}after", kernel=kernel, memory_mib=64)
    path = tmp_path / "after.cfg"
    path.write_text(cfg.to_xl_config())
    o = _xl_create(path)
    try:
        assert o.returncode == 0, o.stderr
        assert _nr_pages(cfg.name, 120.0) == 64 * 256
    finally:
        subprocess.run(["xl", "destroy", cfg.name], capture_output=True, check=False)
    assert host.physinfo().outstanding_pages == 0


# -- The lock file against restores ------------------------------------------

SMALL_MIB = 64
#: How long a create that must wait for the lock gets to (wrongly) finish: on
#: TCG an unhindered create of a tiny guest takes a few seconds at most.
HELD_BACK_S = 15.0
#: How long a create that may go ahead gets to finish.
CREATE_S = 300.0

#: A restore (or migrate-receive) as patched xl takes the lock, in a process of
#: its own (POSIX locks are per process, so the test's own would not conflict):
#: the turnstile (byte 1), then the lock proper (byte 0), both exclusive; held
#: until a line on stdin.
_RESTORE = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1)
print("turnstile", flush=True)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
print("locked", flush=True)
sys.stdin.readline()
"""


def _xl_lockfile() -> Path:
    """xl.conf's "lockfile", else xl's default (the lab does not set it)."""
    try:
        text = Path("/etc/xen/xl.conf").read_text()
    except OSError:
        return XL_LOCKFILE
    m = re.search(r'^\s*lockfile\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return Path(m.group(1)) if m else XL_LOCKFILE


def _open_lockfile(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _entries(path: Path) -> list[LockEntry]:
    fid = file_id(path)
    return [] if fid is None else lock_entries(Path("/proc/locks").read_text(), fid)


class _Create:
    """``xl create`` of a tiny guest, in the background."""

    def __init__(self, name: str, kernel: Path, tmp_path: Path,
                 xl_config: Callable[[str], str] | None = None) -> None:
        """``xl_config`` rewrites the PV guest's xl config (e.g. to PVH)."""
        self.name = name
        cfg = tmp_path / f"{name}.cfg"
        text = DomainConfig(name=name, kernel=kernel, memory_mib=SMALL_MIB).to_xl_config()
        cfg.write_text(xl_config(text) if xl_config else text)
        self.err = tmp_path / f"{name}.stderr"
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(["xl", "create", "-q", str(cfg)],
                                         stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def exists(self, host) -> bool:  # type: ignore[no-untyped-def]
        return any(d.name == self.name for d in host.domains())

    def assert_held_back(self, host, seconds: float,  # type: ignore[no-untyped-def]
                         why: str) -> None:
        """Neither exits nor gets its domain for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            done = f"exited rc={rc}" if rc is not None else "built its domain"
            assert rc is None and not self.exists(host), \
                f"{self.name}: xl create {done} while {why}:\n{self.stderr()}"
            time.sleep(0.5)

    def assert_completes(self, host,  # type: ignore[no-untyped-def]
                         timeout: float = CREATE_S) -> None:
        rc = self.proc.wait(timeout)
        assert rc == 0, f"{self.name}: xl create failed rc={rc}:\n{self.stderr()}"
        assert self.exists(host), f"{self.name}: xl create succeeded but no such domain"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class _SimulatedRestore:
    """A child process taking the lock file as a restore does (_RESTORE)."""

    def __init__(self, lockfile: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _RESTORE, str(lockfile)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, line: str, timeout: float) -> None:
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"simulated restore did not say {line!r} "
                                 f"within {timeout} s (rc={self.proc.poll()})") from None
        assert got == line, f"simulated restore said {got!r}, expected {line!r}"

    def said_nothing(self) -> bool:
        return self.lines.empty()

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def _cleanup(host, helpers, prefix: str,  # type: ignore[no-untyped-def]
             creates: list[_Create]) -> None:
    for c in creates:
        c.kill()
    for d in host.domains():
        if d.name.startswith(prefix):
            d.destroy()
    assert helpers.wait_for(
        lambda: not any(n.startswith(prefix) for n in helpers.ours(host)), 120.0), \
        f"domains {prefix}* outlived the test"


def _assert_lock_unused(lockfile: Path) -> None:
    left = _entries(lockfile)
    assert not left, f"locks left on {lockfile}: {left}"


def _assert_waits_as_expected(lockfile: Path, others: set[int], what: str) -> None:
    """An xl create waits for the lock file, and as this xl takes it: stock
    for the whole file exclusive, patched for the turnstile (byte 1) shared."""
    expect_lock = os.environ.get("PYXEN_EXPECT_XL_LOCK")
    want = {"1": ("WRITE", 0, None), "0": ("READ", 1, 1)}.get(expect_lock or "")
    waiting: list[LockEntry] = []

    def xl_waits() -> bool:
        waiting[:] = [e for e in _entries(lockfile) if e.waiting and e.pid not in others]
        return bool(waiting)

    assert xl_waits(), f"{what}: no xl create waits for {lockfile}: {_entries(lockfile)}"
    if want is not None:
        assert any((e.type, e.start, e.end) == want for e in waiting), \
            f"{what}: xl waits with {waiting}, expected a {want} request " \
            f"(PYXEN_EXPECT_XL_LOCK={expect_lock})"


def test_create_waits_while_lock_file_held_exclusive(autoballoon_host, kernel, helpers,
                                                     tmp_path):
    """A create does not build while the lock file is held exclusive, as a
    restore or an older xl holds it (a write lock on the whole file): the
    memory ballooned out for an incoming domain is not up for grabs."""
    host = autoballoon_host
    lockfile = _xl_lockfile()
    prefix = f"{helpers.PREFIX}lkx"
    creates: list[_Create] = []
    fd = _open_lockfile(lockfile)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # l_start 0, l_len 0: the whole file
        creates.append(_Create(f"{prefix}0", kernel, tmp_path))
        creates[0].assert_held_back(host, HELD_BACK_S, f"{lockfile} was held exclusive")
        _assert_waits_as_expected(lockfile, {os.getpid()}, "held exclusive")
        os.close(fd)
        fd = -1
        creates[0].assert_completes(host)
        _assert_lock_unused(lockfile)
        assert host.physinfo().outstanding_pages == 0
    finally:
        if fd >= 0:
            os.close(fd)
        _cleanup(host, helpers, prefix, creates)


def test_waiting_restore_holds_back_new_creates(autoballoon_host, kernel, helpers, tmp_path):
    """The turnstile: while a restore waits for creates already building, a
    new create queues behind it, so a stream of creates cannot starve it."""
    host = autoballoon_host
    lockfile = _xl_lockfile()
    prefix = f"{helpers.PREFIX}lkt"
    expect_lock = os.environ.get("PYXEN_EXPECT_XL_LOCK")
    creates: list[_Create] = []
    restore: _SimulatedRestore | None = None
    fd = _open_lockfile(lockfile)
    try:
        # A claim-mode create in flight, as patched xl holds the lock during a
        # build: shared, on byte 0.
        fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0)
        if expect_lock == "0":
            # Patched xl builds alongside it (shared with shared), so what
            # holds back the create below is the waiting restore, not this.
            creates.append(_Create(f"{prefix}0", kernel, tmp_path))
            creates[-1].assert_completes(host)
        restore = _SimulatedRestore(lockfile)
        restore.expect("turnstile", 60.0)
        assert helpers.wait_for(
            lambda: any(e.waiting and e.pid == restore.proc.pid and e.start == 0
                        for e in _entries(lockfile)), 30.0), \
            f"the simulated restore does not wait for byte 0: {_entries(lockfile)}"
        assert restore.said_nothing()
        # A new create, while the restore waits.
        late = _Create(f"{prefix}1", kernel, tmp_path)
        creates.append(late)
        late.assert_held_back(host, HELD_BACK_S, "a restore waited for the lock")
        _assert_waits_as_expected(lockfile, {os.getpid(), restore.proc.pid},
                                  "restore waiting")
        # The build in flight ends: the restore, not the new create, goes next.
        os.close(fd)
        fd = -1
        restore.expect("locked", 60.0)
        late.assert_held_back(host, 5.0, "a restore held the lock")
        # The restore ends: the new create goes ahead.
        restore.release()
        late.assert_completes(host)
        _assert_lock_unused(lockfile)
        assert host.physinfo().outstanding_pages == 0
    finally:
        if fd >= 0:
            os.close(fd)
        if restore is not None:
            restore.kill()
        _cleanup(host, helpers, prefix, creates)


def test_a_pvh_create_takes_the_lock_file_exclusive(autoballoon_host, kernel, helpers,
                                                     tmp_path):
    """A PVH build is only partly claimed (special pages and the paging pool
    are allocated outside the claim), so patched xl still takes the lock file
    exclusive for it: while a claim-mode create holds the lock shared (the
    test holds byte 0 shared, as one does), a PVH create waits, asking for a
    write lock.  The tiny guest is PV-only, so the PVH build itself fails
    once it runs: what is checked is the wait, and that the failure leaves
    no domain and no lock behind."""
    host = autoballoon_host
    lockfile = _xl_lockfile()
    prefix = f"{helpers.PREFIX}lkp"
    expect_lock = os.environ.get("PYXEN_EXPECT_XL_LOCK")
    # Stock: the whole file, exclusive.  Patched: byte 0, exclusive (after
    # the turnstile, byte 1, which nobody holds).
    want = ("WRITE", 0, None) if expect_lock == "1" else ("WRITE", 0, 0)
    creates: list[_Create] = []
    fd = _open_lockfile(lockfile)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0)
        pvh = _Create(f"{prefix}0", kernel, tmp_path, helpers.pvh_config)
        creates.append(pvh)
        pvh.assert_held_back(host, HELD_BACK_S, "a claim-mode create held the lock shared")
        waiting = [e for e in _entries(lockfile) if e.waiting and e.pid != os.getpid()]
        assert any((e.type, e.start, e.end) == want for e in waiting), \
            f"the PVH create waits with {waiting}, expected a {want} request " \
            f"(PYXEN_EXPECT_XL_LOCK={expect_lock})"
        os.close(fd)
        fd = -1
        pvh.proc.wait(CREATE_S)
        assert helpers.wait_for(lambda: not pvh.exists(host), 60.0), \
            f"the failed PVH create left its domain:\n{pvh.stderr()}"
        _assert_lock_unused(lockfile)
    finally:
        if fd >= 0:
            os.close(fd)
        _cleanup(host, helpers, prefix, creates)
