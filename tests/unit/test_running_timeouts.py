"""The time a dom0 command is given grows with the idle guests (--running)
it must bring up and destroy before and after its own work."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.requests import AutoscaleRequest, StormRequest
from pyxen.lab.host import autoscale, bench


class Dom0:
    """Records the timeout each command is given."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def run(self, argv: list[str], timeout: float, **kwargs: Any) -> "Dom0":
        self.timeouts.append(timeout)
        return self

    def json_file(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}


def storm_timeout(running: int) -> float:
    dom0 = Dom0()
    bench.run_storm(dom0, StormRequest(guests=8, concurrency=1, kernel=Path("/g"),  # type: ignore[arg-type]
                                       running=running))
    return dom0.timeouts[0]


def replay_timeout(running: int) -> float:
    dom0 = Dom0()
    autoscale.run_replay(dom0, AutoscaleRequest(Path("/g"), (0,), (0.0,), (1.0,),  # type: ignore[arg-type]
                                                keep_alive_s=1.0, running=running))
    return dom0.timeouts[0]


@pytest.mark.parametrize("timeout", [storm_timeout, replay_timeout])
def test_each_running_guest_adds_its_allowance(timeout: Any) -> None:
    for n in (64, 256, 500):
        assert timeout(n) - timeout(0) == pytest.approx(protocol.running_guests_s(n))


def test_the_allowance_covers_stock_bringing_up_500_on_a_slow_machine() -> None:
    # Stock's toolstack took 115 s, 355 s, 1,062 s and 3,758 s to bring up
    # 64, 128, 256 and 500 idle guests under TCG, each create slower by the
    # guests already up: t(n) = a n + c n^2 with a, c >= 0, so t(500) <=
    # t(256) (500/256)^2 (4,051 s).  Three times that (a machine 3x slower),
    # and as much again for their destroys, stays inside.
    for n, measured in ((64, 115.0), (128, 355.0), (256, 1062.0), (500, 3758.0)):
        assert 2 * 3 * measured < protocol.running_guests_s(n)
    assert 2 * 3 * 1062.0 * (500 / 256) ** 2 < protocol.running_guests_s(500)
    assert protocol.running_guests_s(0) == 0


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="running guests must be >= 0, got -1"):
        protocol.running_guests_s(-1)
