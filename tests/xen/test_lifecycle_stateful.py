"""Hypothesis stateful test of concurrent domain birth and death.

Rules create (16-64 MiB, 1-2 vCPUs, random valid names), destroy,
pause/unpause, and run a batch of creates and destroys from several threads
at once.  After every step the domains Xen reports are the model's, names
are unique, and no domain stays dying; at the end, with everything destroyed,
free memory is back to the baseline and no Xenstore node is left for any
domain that existed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import pyxen
from pyxen.config import DomainConfig

pytestmark = pytest.mark.xen

#: Most of our domains alive at once: 8 x 64 MiB fits the lab's ~2 GiB.
MAX_DOMAINS = 8

#: Seconds a destroyed domain may stay "dying" before that is a failure.
DYING_LIMIT_S = 30.0

#: Free memory must come back to the baseline exactly (0 MiB tolerance): Xen
#: counts pages awaiting scrub as free, and a destroyed domain returns all it
#: held (RAM, page tables, p2m, grant and event-channel pages) to the heap; dom0
#: runs with a fixed dom0_mem, so nothing else moves.  We wait up to
#: MEMORY_SETTLE_S for the asynchronous teardown to finish.
FREE_MEMORY_TOLERANCE_MIB = 0
MEMORY_SETTLE_S = 30.0

suffixes = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)


@dataclass
class Model:
    domid: int
    memory_mib: int
    vcpus: int
    paused: bool


class DomainLifecycle(RuleBasedStateMachine):
    # Set by the test function below (Hypothesis builds the machine itself).
    host: pyxen.Host
    kernel: object
    helpers: Any        # conftest's Helpers
    prefix: str

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Model] = {}
        self.ever: set[int] = set()

    @initialize()
    def baseline(self) -> None:
        assert not self._ours(), "domains of ours left from an earlier run"
        self.free0 = self.host.free_memory_mib()

    # -- helpers -----------------------------------------------------------
    def _ours(self) -> dict[str, int]:
        return {name: domid for name, domid in self.helpers.ours(self.host).items()
                if name.startswith(self.prefix)}

    def _create(self, name: str, memory: int, vcpus: int, paused: bool) -> None:
        dom = self.host.create(DomainConfig(name, self.kernel, memory_mib=memory,  # type: ignore[arg-type]
                                            vcpus=vcpus), paused=paused)
        self.model[name] = Model(dom.domid, memory, vcpus, paused)
        self.ever.add(dom.domid)

    def _destroy(self, name: str) -> None:
        m = self.model.pop(name)
        self.host.xl.destroy(m.domid)
        dom = pyxen.Domain(self.host, m.domid, name, m.memory_mib)
        assert dom.wait_death(DYING_LIMIT_S), f"{name} ({m.domid}) still dying"

    # -- rules ---------------------------------------------------------------
    @precondition(lambda self: len(self.model) < MAX_DOMAINS)
    @rule(suffix=suffixes, memory=st.integers(16, 64), vcpus=st.integers(1, 2),
          paused=st.booleans())
    def create(self, suffix: str, memory: int, vcpus: int, paused: bool) -> None:
        name = self.prefix + suffix
        if name in self.model:
            with pytest.raises(pyxen.LibxlError, match="already exists"):
                self.host.create(DomainConfig(name, self.kernel, memory_mib=memory))  # type: ignore[arg-type]
            return
        self._create(name, memory, vcpus, paused)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def destroy(self, data: st.DataObject) -> None:
        self._destroy(data.draw(st.sampled_from(sorted(self.model))))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def toggle_pause(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        m = self.model[name]
        (self.host.xc.unpause if m.paused else self.host.xc.pause)(m.domid)
        m.paused = not m.paused

    @rule(new=st.lists(suffixes, min_size=1, max_size=3, unique=True),
          data=st.data(), memory=st.integers(16, 64))
    def concurrent_batch(self, new: list[str], data: st.DataObject, memory: int) -> None:
        """Creates and destroys from several threads at once."""
        fresh = [self.prefix + s for s in new if self.prefix + s not in self.model]
        fresh = fresh[:max(0, MAX_DOMAINS - len(self.model))]
        doomed = data.draw(st.lists(st.sampled_from(sorted(self.model)), unique=True,
                                    max_size=2)) if self.model else []
        jobs = [(self._create, (n, memory, 1, False)) for n in fresh] + \
               [(self._destroy, (n,)) for n in doomed]
        with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
            for f in [pool.submit(fn, *args) for fn, args in jobs]:
                f.result()

    # -- invariants ----------------------------------------------------------
    @invariant()
    def xen_agrees_with_the_model(self) -> None:
        ours = self._ours()
        assert ours == {n: m.domid for n, m in self.model.items()}
        for name, m in self.model.items():
            info = self.host.xc.domain_info(m.domid)
            assert info is not None and not info.dying, name
            assert info.paused == m.paused, name
            assert info.max_vcpus == m.vcpus, name
            assert info.memory_mib == m.memory_mib, name

    @invariant()
    def names_are_unique(self) -> None:
        names = [d.name for d in self.host.domains()]
        assert len(names) == len(set(names))

    def teardown(self) -> None:
        for name in list(self.model):
            self._destroy(name)
        assert not self._ours()
        deadline = time.monotonic() + MEMORY_SETTLE_S
        while abs(self.host.free_memory_mib() - self.free0) > FREE_MEMORY_TOLERANCE_MIB:
            assert time.monotonic() < deadline, (
                f"free memory {self.host.free_memory_mib()} MiB, baseline {self.free0} MiB")
            time.sleep(0.2)
        left = self.helpers.xenstore_leftovers(self.host, self.ever)
        assert left == [], f"Xenstore nodes left for dead domains: {left}"


#: Examples of 10 steps (``run_length``): 3 in CI (each about 7 s of a 2-pCPU
#: lab's time under TCG, 24 s at a third of the CPU), 6 in scheduled and
#: developers' runs; the ``soak`` profile runs the profile's count.
EXAMPLES = {"ci": 3, "scheduled": 6, "default": 6}


def _examples(run_length: Callable[..., int]) -> int:
    profile = settings.default.max_examples
    if os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev") == "soak":
        return profile
    return min(profile, run_length("PYXEN_STATEFUL_EXAMPLES", **EXAMPLES))


def test_domain_lifecycle(host, kernel, helpers, run_length):  # type: ignore[no-untyped-def]
    DomainLifecycle.host = host
    DomainLifecycle.kernel = kernel
    DomainLifecycle.helpers = helpers
    DomainLifecycle.prefix = helpers.PREFIX + "sm-"
    machine = DomainLifecycle.TestCase
    machine.settings = settings(max_examples=_examples(run_length), stateful_step_count=10,
                                deadline=None)
    machine().runTest()
