"""destroy_listed(), the one clean-up of the lab's dom0 benchmarks (the
storm's, the autoscale replay's strays, the tenants'): it destroys what is
listed and wanted, each guest whatever became of the others, waits for them
to go, and never raises."""

from __future__ import annotations

import threading
from pathlib import Path

from pyxen.config import DomainConfig
from pyxen.lab.dom0 import tenants
from pyxen.lab.dom0.drivers import destroy_listed


class Listed:
    """A driver listing ``live``; destroys of ``refuse`` raise, ``stuck``
    guests stay listed, and listing raises from the ``list_fails``-th call."""

    name = "fake"

    def __init__(self, live: set[str], refuse: frozenset[str] = frozenset(),
                 stuck: frozenset[str] = frozenset(), list_fails: int | None = None) -> None:
        self.live, self.refuse, self.stuck = set(live), refuse, stuck
        self.list_fails = list_fails
        self.lists = 0
        self.destroyed: list[str] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def create(self, config: DomainConfig, config_file: Path) -> None:
        raise AssertionError("a clean-up creates nothing")

    def destroy(self, name: str) -> None:
        with self.lock:
            self.destroyed.append(name)
            self.threads.add(threading.get_ident())
            if name in self.refuse:
                raise RuntimeError(f"libxl refused {name}")
            if name not in self.stuck:
                self.live.discard(name)

    def names(self) -> set[str]:
        self.lists += 1
        if self.list_fails is not None and self.lists >= self.list_fails:
            raise OSError("xenstored went away")
        with self.lock:
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
    done = destroy_listed(d, lambda n: True, 0.0, "clean-up: destroy")
    assert sorted(d.destroyed) == ["a-1", "a-2", "a-3"]
    assert done.errors == ("clean-up: destroy a-1: RuntimeError: libxl refused a-1",)
    assert done.left == {"a-1", "a-3"}


def test_listing_that_fails_is_an_error_not_an_exception() -> None:
    d = Listed({"a-1"}, list_fails=1)
    done = destroy_listed(d, lambda n: True, 0.0)
    assert done.errors == ("cannot list the guests to destroy them: OSError: "
                           "xenstored went away",) and d.destroyed == []
    d = Listed({"a-1"}, list_fails=2)           # the listing after the destroys fails
    done = destroy_listed(d, lambda n: True, 0.0)
    assert done.errors == ("cannot list the guests left: OSError: xenstored went away",)
    assert done.left == {"a-1"}                 # not known to have gone


def test_a_guest_still_dying_is_waited_for_until_the_timeout() -> None:
    d = Listed({"a-1"}, stuck=frozenset({"a-1"}))
    timer = threading.Timer(0.3, lambda: d.live.discard("a-1"))
    timer.start()
    done = destroy_listed(d, lambda n: True, 5.0)
    timer.join()
    assert done.left == set() and d.lists >= 2


def test_workers_destroy_in_parallel() -> None:
    names = {f"r{i}" for i in range(16)}
    d = Listed(names)
    done = destroy_listed(d, names.__contains__, 0.0, workers=4)
    assert done.found == names and d.live == set() and len(d.destroyed) == 16


def test_tenants_stop_reports_a_listing_that_fails_instead_of_raising() -> None:
    t = tenants.Tenants(names=["s-r0", "s-r1"])
    d = Listed({"s-r0", "s-r1"}, list_fails=1)
    assert tenants.stop(d, t) == []
    assert t.errors == ["cannot list the guests to destroy them: OSError: "
                        "xenstored went away"]
