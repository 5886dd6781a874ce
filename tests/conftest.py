"""Shared pytest configuration: Hypothesis profiles and where Xen tests run.

Tests marked ``xen`` need a Xen dom0.  With ``--xen lab`` (the default) they
are not run here: tests/nested/test_in_dom0.py boots the nested lab and runs
them inside its dom0, once per variant.  With ``--xen host`` they run in this
process, which must be the dom0 of a real Xen host (root); they only touch
domains they create (names starting with ``pxt``).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# CI keeps example counts small for its 90-minute budget; "soak" is for long runs.
settings.register_profile("ci", max_examples=50, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("soak", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--xen", choices=("lab", "host"), default="lab",
        help="where tests marked 'xen' run: 'lab' (default) boots nested Xen and runs "
             "them in its dom0; 'host' runs them here, in the dom0 of a real Xen host")
    parser.addoption(
        "--scheduled", action="store_true",
        default=os.environ.get("PYXEN_SCHEDULED") == "1",
        help="also run tests marked 'scheduled' (stock Xen's suites, and boots that "
             "repeat what another covers: for scheduled runs, not every CI run; or "
             "PYXEN_SCHEDULED=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--scheduled"):
        later = pytest.mark.skip(reason="scheduled runs only (--scheduled or "
                                        "PYXEN_SCHEDULED=1)")
        for item in items:
            if "scheduled" in item.keywords:
                item.add_marker(later)
    if config.getoption("--xen") == "host":
        return
    def skip(runner: str) -> pytest.MarkDecorator:
        return pytest.mark.skip(reason=f"runs inside the lab's dom0 (tests/nested/{runner}); "
                                       "use --xen host in a real dom0")

    for item in items:
        if "scrub" in item.keywords:
            item.add_marker(skip("test_scrub_in_dom0.py"))
        elif "autoballoon" in item.keywords:
            item.add_marker(skip("test_autoballoon_in_dom0.py"))
        elif "xen" in item.keywords:
            item.add_marker(skip("test_in_dom0.py"))
