"""Domctls on domains that are being built, from several threads at once.

Until its first unpause a domain is being built (Xen's ``creation_finished``
is false): with hypervisor patch 0017 its domctls serialise on a lock of the
domain's own instead of the global domctl lock, the unpause that finishes the
creation changes over to the global lock, and a destruction of a domain being
built marks it dying under the domain's lock.  These tests drive those paths
with bare domains (createdomain alone, never run) and pause/unpause pairs from
several threads, each thread on every domain, and check what must hold
whichever lock Xen takes: the controller's pause count comes out where it
started, the first unpause finishes the creation, a destruction completes
while other threads still pause and unpause the dying domain, and nothing
is left.  They run on stock as well (the same domctls under the global
lock); which lock was taken, and how often a domctl was retried, the
profiling storm benchmark counts.

With hypervisor patch 0019 pausing a domain and the first pass of its
destruction take the domain's lock alone at any point of its life, waiting
for its vCPUs without the global lock: the last tests pause and destroy
running guests (spinning) from several threads, and check that a pause
holds (the guest's CPU time stands still until it is undone), that the
pause counts come out balanced, and that destructions complete.

Destructions take turns on a lock of their own (hypervisor 0014-0015): the
last test checks that a small destruction does not wait for a big one's
whole teardown.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pyxen.config import DomainConfig
from pyxen.errors import XenCtrlError, XenError
from pyxen.libxl import deadlocked_children

pytestmark = pytest.mark.xen

#: Explicit IDs far from what the allocator hands out in a test run (it
#: counts up from 1), and from test_domain_ids' range.
IDS = range(32100, 32700)
THREADS = 4
PAIRS = 150


@pytest.fixture
def bare_domains(host, helpers) -> Iterator[Callable[[int], list[int]]]:  # type: ignore[no-untyped-def]
    """Makes bare domains (never unpaused, so still being built) and
    destroys whatever is left of them at the end."""
    xc = host.xc
    made: list[int] = []

    def make(n: int) -> list[int]:
        used = helpers.domids(host) | set(made)
        ids = [i for i in IDS if i not in used][:n]
        for domid in ids:
            made.append(xc.create_bare_domain(domid))
        return ids

    yield make
    for domid in made:
        if xc.domain_info(domid) is not None:
            xc.destroy(domid)
    assert helpers.wait_for(lambda: all(xc.domain_info(d) is None for d in made), 60), \
        f"bare domains still there a minute after their destroy: {made}"


def hammer(work: Callable[[int], None], n: int) -> list[BaseException]:
    """Runs ``work(i)`` in ``n`` threads at once; returns what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            start.wait(timeout=30)
            work(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        errors.append(AssertionError(f"threads still in their domctls after 300 s: {stuck}"))
    return errors


def test_pause_pairs_on_domains_being_built_and_then_running(host, bare_domains):  # type: ignore[no-untyped-def]
    xc = host.xc
    doms = bare_domains(3)

    def pairs(i: int) -> None:
        for _ in range(PAIRS):
            for domid in doms[i % len(doms):] + doms[:i % len(doms)]:
                xc.pause(domid)
                xc.unpause(domid)

    # Being built: the controller's count goes 1 -> 1 + THREADS at most and
    # back to 1, never to 0, so no pair finishes a creation.
    assert hammer(pairs, THREADS) == []
    for domid in doms:
        info = xc.domain_info(domid)
        assert info is not None and info.paused, \
            f"domain {domid} no longer paused by its controller after balanced pause/unpause pairs: {info}"

    # The first unpause finishes the creation (the count drops to 0); a
    # second one has nothing left to drop.
    for domid in doms:
        xc.unpause(domid)
        info = xc.domain_info(domid)
        assert info is not None and not info.paused, f"domain {domid} still paused: {info}"
        with pytest.raises(XenCtrlError) as extra:
            xc.unpause(domid)
        assert extra.value.errno == errno.EINVAL, extra.value

    # Built: the same pairs, now under the global lock.
    assert hammer(pairs, THREADS) == []
    for domid in doms:
        info = xc.domain_info(domid)
        assert info is not None and not info.paused, f"domain {domid} left paused: {info}"


#: After a domain's destroy starts, a pause or unpause may find it dying
#: (EINVAL from an unpause, with the series) or gone (ESRCH); before it,
#: nothing may fail.
LATE_ERRNOS = frozenset({errno.EINVAL, errno.ESRCH})


def pause_pair(xc, domid: int, destroying: threading.Event | None) -> bool:  # type: ignore[no-untyped-def]
    """One pause/unpause pair on ``domid``; False once the domain is dying
    or gone after ``destroying`` was set (None: the domain is not being
    destroyed, and any error is raised)."""
    try:
        xc.pause(domid)
        xc.unpause(domid)
    except XenError as e:   # DomainNotFound (ESRCH) or XenCtrlError
        if destroying is not None and destroying.is_set() and e.errno in LATE_ERRNOS:
            return False
        raise
    return True


def test_destroying_a_domain_being_built_while_others_pause_it(host, bare_domains, helpers):  # type: ignore[no-untyped-def]
    xc = host.xc
    (domid,) = bare_domains(1)
    destroying = threading.Event()
    destroyed = threading.Event()

    def pair() -> bool:
        return pause_pair(xc, domid, destroying)

    def pairs_until_gone(i: int) -> None:
        if i == 0:
            for _ in range(20):
                pair()
            destroying.set()
            try:
                xc.destroy(domid)
            finally:
                destroyed.set()     # a failed destroy must not leave the others looping
            return
        while not destroyed.is_set() and pair():
            pass
        pair()  # Once more after the destroy returned: refused or harmless.

    assert hammer(pairs_until_gone, THREADS) == []
    assert helpers.wait_for(lambda: xc.domain_info(domid) is None, 60), \
        f"domain {domid} still there a minute after its destroy: {xc.domain_info(domid)}"


#: Pause/unpause pairs per thread on running guests: each pair waits for a
#: spinning vCPU to stop, slower than on a domain that never ran.
RUNNING_PAIRS = 40
#: How long a held pause is watched for the guest's CPU time to stand still.
HOLD_S = 0.2


@pytest.fixture
def spinners(host, kernel, helpers) -> Iterator[list[int]]:  # type: ignore[no-untyped-def]
    """Two running guests that spin (never block), so that a pause always
    finds their vCPUs running; destroyed at the end if a test left them."""
    doms = []
    try:
        for i in range(2):
            doms.append(host.create(DomainConfig(f"{helpers.PREFIX}pausespin{i}", kernel,
                                                 memory_mib=16, cmdline="spin")))
        yield [d.domid for d in doms]
    finally:
        for d in doms:
            with contextlib.suppress(Exception):   # destroyed by its test
                d.destroy()
        for d in doms:
            d.wait_death(60)


def cpu_time_ns(xc, domid: int) -> int:  # type: ignore[no-untyped-def]
    info = xc.domain_info(domid)
    assert info is not None, f"domain {domid} gone"
    return int(info.cpu_time_ns)


def runs(xc, domid: int) -> bool:  # type: ignore[no-untyped-def]
    """Whether the guest's CPU time grows over half a second."""
    before = cpu_time_ns(xc, domid)
    time.sleep(0.5)
    return cpu_time_ns(xc, domid) > before


def test_pause_pairs_on_running_guests(host, spinners):  # type: ignore[no-untyped-def]
    xc = host.xc
    assert all(runs(xc, d) for d in spinners), "the spinning guests do not run"
    moved: list[str] = []

    def pairs(i: int) -> None:
        rotated = spinners[i % 2:] + spinners[:i % 2]
        for n in range(RUNNING_PAIRS):
            for domid in rotated:
                xc.pause(domid)
                if i == 0 and n % 8 == 0:
                    # Whatever the other threads do, this pause holds until
                    # its unpause: the guest's vCPU does not run meanwhile.
                    held = cpu_time_ns(xc, domid)
                    time.sleep(HOLD_S)
                    later = cpu_time_ns(xc, domid)
                    if later != held:
                        moved.append(f"domain {domid}: CPU time {held} -> {later} ns "
                                     f"while paused")
                xc.unpause(domid)

    assert hammer(pairs, THREADS) == []
    assert moved == []
    for domid in spinners:
        info = xc.domain_info(domid)
        assert info is not None and not info.paused, \
            f"domain {domid} left paused after balanced pause/unpause pairs: {info}"
        assert runs(xc, domid), f"domain {domid} no longer runs after its pairs"


def test_destroying_a_running_guest_while_others_pause_it(host, spinners, helpers):  # type: ignore[no-untyped-def]
    """A destroy while other threads pause and unpause the guest and
    another.  On stock's toolstack libxl's destroyer child is forked while
    they make hypercalls; pyxen's libxenctrl calls and its forks take the
    shim's gate, so the child never inherits a libxenctrl lock from them
    (before the gate up to ten children in a row were found deadlocked)."""
    xc = host.xc
    deadlocks = deadlocked_children()
    domid, other = spinners
    destroying = threading.Event()
    destroyed = threading.Event()

    def pair(target: int) -> bool:
        # Only the guest being destroyed may refuse; the other never.
        return pause_pair(xc, target, destroying if target == domid else None)

    def work(i: int) -> None:
        if i == 0:
            for _ in range(10):
                pair(domid)
            destroying.set()
            try:
                host.xl.destroy(domid)   # libxl: pause, devices, destroydomain
            finally:
                destroyed.set()     # a failed destroy must not leave the others looping
            return
        while not destroyed.is_set() and pair(domid) and pair(other):
            pass
        pair(domid)

    assert hammer(work, THREADS) == []
    assert deadlocked_children() == deadlocks, \
        "libxl's destroyer child inherited a lock from a thread pausing the guests"
    assert helpers.wait_for(lambda: xc.domain_info(domid) is None, 60), \
        f"domain {domid} still there a minute after its destroy: {xc.domain_info(domid)}"
    info = xc.domain_info(other)
    assert info is not None and not info.paused, f"the other guest left paused: {info}"
    assert runs(xc, other), "the other guest no longer runs"


def test_several_destroys_of_one_domain_at_once(host, bare_domains, helpers):  # type: ignore[no-untyped-def]
    """Each domain destroyed by three threads at once, its first unpause
    done (built) or not: every destroy returns success, or ESRCH once the
    domain is gone, none leaves it alive, and all are gone in the end (with
    hypervisor 0019 a destroy that finds the domain dying waits until the
    one marking it dying has let go of the domain's lock)."""
    xc = host.xc
    doms = bare_domains(8)
    for domid in doms[::2]:
        xc.unpause(domid)   # finishes the creation of every other one
    early: list[str] = []

    def destroy_all(i: int) -> None:
        for domid in doms[i:] + doms[:i]:
            try:
                xc.destroy(domid)
            except XenError as e:
                if e.errno != errno.ESRCH:
                    raise
                continue
            info = xc.domain_info(domid)
            if info is not None and not info.dying:
                early.append(f"domain {domid} destroyed, still not dying: {info}")

    assert hammer(destroy_all, 3) == []
    assert early == []
    assert helpers.wait_for(lambda: all(xc.domain_info(d) is None for d in doms), 60), \
        f"domains still there a minute after their destroys: {[xc.domain_info(d) for d in doms]}"


#: The big guest of the turn-taking test: its teardown frees memory for some
#: 0.4 s under TCG without scrub_debug (longer with it, every freed page
#: poisoned), tens of times what a bare domain's destroy takes (1-12 ms).
BIG_GUEST_MIB = 768


def test_a_small_destroy_does_not_wait_for_a_big_one_to_finish(host, kernel, bare_domains,  # type: ignore[no-untyped-def]
                                                               helpers):
    """Destructions take turns on one lock (one frees memory at a time): a
    domain destroyed while a big guest's memory is being freed is gone
    before that memory is, on stock (the domctl lock, taken again at every
    continuation) as with the series (hypervisor 0014-0015: a lock of the
    destructions' own, the waiting one blocked until it is released): the
    big guest still has a tenth of its memory when the small destroy
    returns.  A destruction that kept the lock to the end of its teardown
    fails it (the big guest down to a page)."""
    xc = host.xc
    (small,) = bare_domains(1)
    big = host.create(DomainConfig(f"{helpers.PREFIX}bigteardown", kernel,
                                   memory_mib=BIG_GUEST_MIB))
    full = xc.domain_info(big.domid).tot_pages
    errors: list[BaseException] = []

    def destroy_big() -> None:
        try:
            big.destroy()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    destroyer = threading.Thread(target=destroy_big, daemon=True)
    destroyer.start()
    try:
        def freeing() -> bool:
            info = xc.domain_info(big.domid)
            return info is None or info.tot_pages < full * 95 // 100

        assert helpers.wait_for(freeing, 60, interval=0.001), \
            f"the big guest's memory is not being freed a minute on: {xc.domain_info(big.domid)}"
        at_start = xc.domain_info(big.domid)
        t0 = time.monotonic()
        xc.destroy(small)
        took = time.monotonic() - t0
        at_end = xc.domain_info(big.domid)
    finally:
        destroyer.join(timeout=300)
    assert not destroyer.is_alive(), "the big guest's destroy still runs after 300 s"
    assert errors == []
    assert at_start is not None, "the big guest was gone before the small destroy began"
    print(f"small destroy took {took:.3f} s; the big guest's pages then: "
          f"{at_start.tot_pages} of {full} -> {at_end.tot_pages if at_end else 'gone'}")
    assert at_end is not None and at_end.tot_pages >= full // 10, \
        (f"the small destroy returned once the big guest's memory was nearly all freed "
         f"({took:.3f} s; {at_start.tot_pages} of {full} pages left when it began, "
         f"{at_end.tot_pages if at_end else 0} when it returned): it waited for the teardown")
    left = xc.domain_info(small)
    assert left is None or left.dying, f"the small domain is not dying after its destroy: {left}"
    assert big.wait_death(60)
