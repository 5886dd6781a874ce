"""destroy_listed(), the one clean-up of the lab's dom0 benchmarks (the
storm's, the autoscale replay's strays, the tenants'): it destroys what is
listed and wanted, each guest whatever became of the others, waits for them
to go, and never raises."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pyxen.config import DomainConfig
from pyxen.lab.dom0 import tenants
from pyxen.lab.dom0.drivers import destroy_listed, wait_vanished


class Listed:
    """A driver listing ``live``; destroys of ``refuse`` raise, ``stuck``
    guests stay listed, and listing raises from the ``list_fails``-th call."""

    name = "fake"

    def __init__(self, live: set[str], refuse: frozenset[str] = frozenset(),
                 stuck: frozenset[str] = frozenset(), list_fails: int | None = None,
                 meet: threading.Barrier | None = None,
                 gone_at: dict[str, int] | None = None) -> None:
        self.live, self.refuse, self.stuck = set(live), refuse, stuck
        self.list_fails = list_fails
        self.gone_at = gone_at or {}      # a stuck guest gone from its n-th listing on
        self.meet = meet
        self.lists = 0
        self.destroyed: list[str] = []
        self.lock = threading.Lock()

    def create(self, config: DomainConfig, config_file: Path) -> None:
        raise AssertionError("a clean-up creates nothing")

    def destroy(self, name: str) -> None:
        if self.meet is not None:     # destroys that must be in flight together
            self.meet.wait()
        with self.lock:
            self.destroyed.append(name)
            if name in self.refuse:
                raise RuntimeError(f"libxl refused {name}")
            if name not in self.stuck:
                self.live.discard(name)

    def names(self) -> set[str]:
        self.lists += 1
        if self.list_fails is not None and self.lists >= self.list_fails:
            raise OSError("xenstored went away")
        with self.lock:
            self.live -= {n for n, at in self.gone_at.items() if self.lists >= at}
            return set(self.live)

    def free_memory_mib(self) -> int:
        return 0


def test_only_the_wanted_guests_are_destroyed_and_waited_for() -> None:
    d = Listed({"Domain-0", "a-1", "a-2", "b-1"})
    done = destroy_listed(d, lambda n: n.startswith("a-"), 0.0)
    assert done.found == {"a-1", "a-2"} and done.left == set() and done.errors == ()
    assert d.live == {"Domain-0", "b-1"} and sorted(d.destroyed) == ["a-1", "a-2"]


def test_a_destroy_that_fails_does_not_stop_the_others() -> None:
    d = Listed({"a-1", "a-2", "a-3"}, refuse=frozenset({"a-1"}), stuck=frozenset({"a-3"}))
    done = destroy_listed(d, lambda n: True, 0.0, prefix="clean-up: ")
    assert sorted(d.destroyed) == ["a-1", "a-2", "a-3"]
    assert done.errors == ("clean-up: destroy a-1: RuntimeError: libxl refused a-1",)
    assert done.left == {"a-1", "a-3"}


def test_listing_that_fails_is_an_error_not_an_exception() -> None:
    d = Listed({"a-1"}, list_fails=1)
    done = destroy_listed(d, lambda n: True, 0.0, whose="the storm's guests")
    assert done.errors == ("cannot list the storm's guests to destroy them: OSError: "
                           "xenstored went away",) and d.destroyed == []
    d = Listed({"a-1"}, list_fails=2)           # the listing after the destroys fails
    done = destroy_listed(d, lambda n: True, 0.0)
    assert done.errors == ("cannot list the guests left: OSError: xenstored went away",)
    assert done.left == {"a-1"}                 # not known to have gone


def test_a_listing_that_fails_while_waiting_keeps_what_the_last_one_found() -> None:
    # listings: 1 finds both, 2 both still dying, 3 a-2 gone, 4 fails
    d = Listed({"a-1", "a-2"}, stuck=frozenset({"a-1", "a-2"}), list_fails=4,
               gone_at={"a-2": 3})
    done = destroy_listed(d, lambda n: True, 5.0)
    assert done.left == {"a-1"} and done.found == {"a-1", "a-2"}
    assert done.errors == ("cannot list the guests left: OSError: xenstored went away",)


def test_a_guest_still_dying_is_waited_for() -> None:
    d = Listed({"a-1"}, stuck=frozenset({"a-1"}))
    timer = threading.Timer(0.3, lambda: d.live.discard("a-1"))
    timer.start()
    done = destroy_listed(d, lambda n: True, 5.0)
    timer.join()
    assert done.left == set() and d.lists >= 2


def test_a_guest_that_never_goes_is_left_at_the_timeout() -> None:
    d = Listed({"a-1", "a-2"}, stuck=frozenset({"a-1"}))
    start = time.monotonic()
    done = destroy_listed(d, lambda n: True, 0.5)
    assert done.left == {"a-1"} and done.errors == ()
    assert 0.5 <= time.monotonic() - start < 5.0 and d.lists >= 3


def test_wait_vanished_waits_only_for_its_names() -> None:
    # the benchmarks' wait after their own destroys: other guests don't count
    d = Listed({"a-1", "a-2", "other"}, gone_at={"a-1": 2, "a-2": 3})
    assert wait_vanished(d, {"a-1", "a-2"}, 5.0) == set() and d.lists == 3


def test_wait_vanished_gives_the_names_left_at_the_timeout() -> None:
    d = Listed({"a-1", "a-2"})
    start = time.monotonic()
    assert wait_vanished(d, {"a-1"}, 0.5) == {"a-1"}
    assert time.monotonic() - start >= 0.5


def test_wait_vanished_raises_a_listing_that_fails() -> None:
    d = Listed({"a-1"}, list_fails=2)
    with pytest.raises(OSError, match="xenstored went away"):
        wait_vanished(d, {"a-1"}, 5.0)


def test_workers_destroy_in_parallel_and_report_in_name_order() -> None:
    names = {f"r{i}" for i in range(8)}
    # Each destroy waits until 4 are in flight: a serial clean-up breaks the barrier.
    d = Listed(names, refuse=frozenset({"r5", "r1"}), meet=threading.Barrier(4, timeout=5))
    done = destroy_listed(d, names.__contains__, 0.0, workers=4)
    assert done.found == names and d.live == {"r1", "r5"} and len(d.destroyed) == 8
    assert done.errors == ("destroy r1: RuntimeError: libxl refused r1",
                           "destroy r5: RuntimeError: libxl refused r5")


def test_tenants_stop_reports_a_listing_that_fails_instead_of_raising() -> None:
    t = tenants.Tenants(names=["s-r0", "s-r1"])
    d = Listed({"s-r0", "s-r1"}, list_fails=1)
    assert tenants.stop(d, t) == []
    assert t.errors == ["cannot list the tenants to destroy them: OSError: "
                        "xenstored went away"]
