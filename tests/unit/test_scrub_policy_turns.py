"""Which scrub policy each of scrubbench's gap runs runs under, in dom0:
with ``--scrub-policy alternate`` the workers on and off in turn, set just
before each run; otherwise the policy already set (or none, on a Xen
without the sysctl).  No Xen: a host that records what it is told."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.config import DomainConfig
from pyxen.lab.contract.requests import ScrubRequest
from pyxen.lab.dom0.scrub_dom0 import policy_turns


class RecordingHost:
    def __init__(self) -> None:
        self.policy = "eager"
        self.log: list[str] = []

    def set_scrub_policy(self, policy: str) -> None:
        self.policy = policy
        self.log.append(f"set {policy}")

    def scrub_state(self) -> Any:
        return SimpleNamespace(policy=SimpleNamespace(value=self.policy))


def test_alternation_sets_each_policy_just_before_its_run_and_swaps_every_repetition() -> None:
    host = RecordingHost()
    for rep in range(3):
        for pol in policy_turns(host, True, rep):  # type: ignore[arg-type]
            assert host.policy == pol          # set before the run, not after
            host.log.append(f"run {pol}")
    assert host.log == ["set eager", "run eager", "set idle", "run idle",
                        "set idle", "run idle", "set eager", "run eager",
                        "set eager", "run eager", "set idle", "run idle"]


def test_without_alternation_a_run_is_named_by_the_policy_set() -> None:
    host = RecordingHost()
    host.policy = "idle"
    assert list(policy_turns(host, True, None)) == ["idle"]  # type: ignore[arg-type]
    # A Xen without the sysctl: stock's behaviour, one run, nothing set.
    assert list(policy_turns(host, False, 0)) == [None]  # type: ignore[arg-type]
    assert host.log == []


@pytest.mark.parametrize("policy", ["alternate", "eager", "idle", "boot"])
def test_the_request_takes_every_policy(policy: str) -> None:
    req = ScrubRequest(kernel=Path("/guest"), scrub_policy=policy)
    assert ScrubRequest.from_json(req.to_json()) == req
    with pytest.raises(ValueError, match="scrub_policy"):
        ScrubRequest(kernel=Path("/guest"), scrub_policy="sometimes")


def test_the_spinners_get_the_weight_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyxen.lab.dom0 import scrub_dom0
    monkeypatch.setattr(scrub_dom0, "DirtyPages", lambda host: None)
    monkeypatch.setattr(scrub_dom0, "Profiler", lambda: None)
    made: list[DomainConfig] = []

    class FakeHost:
        def create(self, cfg: DomainConfig) -> SimpleNamespace:
            made.append(cfg)
            return SimpleNamespace(name=cfg.name)

    bench = scrub_dom0.Bench(FakeHost(), Path("/k"), "t-", 60.0)  # type: ignore[arg-type]
    bench.start_spinners(2, weight=1)
    assert [(c.weight, c.cmdline) for c in made] == [(1, "spin"), (1, "spin")]
    made.clear()
    bench.start_spinners(1)
    assert made[0].weight is None
    assert len(bench.spinners) == 3
