"""The benchmark's two storms (timed untraced, counted traced) and their merge."""

from __future__ import annotations

from typing import Any

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.xenprof import domctl_retries_per_op
from pyxen.lab.dom0 import dom0bench, xstrace


def result(makespan: float, requests: float | None, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "guests": 2, "makespan_s": makespan, "create_s": [makespan / 2] * 2,
        "destroy_makespan_s": 1.0, "cpu_s_each": [{"xenstored": 0.1}] * 2,
        "errors": [], "leftover_domains": [], "console_ok": 2,
        "free_memory_mib_before": 100, "free_memory_mib_after": 100,
    }
    for key in dom0bench.COUNTED_FIELDS:
        r[key] = requests
    r.update(over)
    return r


def test_times_come_from_the_untraced_storm_and_counts_from_the_traced_one() -> None:
    timed = result(2.0, 0.0)
    counted = result(7.0, 170.5)
    merged = dom0bench.merge_passes(timed, counted)
    assert merged["makespan_s"] == 2.0
    assert merged["create_s"] == [1.0, 1.0]
    assert all(merged[k] == 170.5 for k in dom0bench.COUNTED_FIELDS)
    assert merged["traced"]["makespan_s"] == 7.0
    assert merged["errors"] == [] and merged["leftover_domains"] == []


def test_failures_of_either_storm_are_reported() -> None:
    timed = result(2.0, 0.0, errors=["create bench-1: boom"], leftover_domains=["bench-1"],
                   free_memory_mib_after=84)
    counted = result(7.0, 170.5, console_ok=1, leftover_domains=["bench-n0"],
                     free_memory_mib_after=68)
    merged = dom0bench.merge_passes(timed, counted)
    assert merged["errors"][0] == "create bench-1: boom"
    assert any("counting storm" in e and "1 of 2" in e for e in merged["errors"])
    assert merged["leftover_domains"] == ["bench-1", "bench-n0"]
    # Memory after both storms, against the baseline before the first.
    assert (merged["free_memory_mib_before"], merged["free_memory_mib_after"]) == (100, 68)


def test_switching_the_trace_without_xenstore_control_names_the_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabError, match="xenstore-control log off"):
        xstrace.set_xs_trace(False)


def test_the_trace_comes_back_on_when_the_untraced_work_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(xstrace.subprocess, "run",
                        lambda argv, **kw: calls.append(argv))
    with pytest.raises(RuntimeError, match="storm failed"):
        with xstrace.xs_trace_off():
            raise RuntimeError("storm failed")
    assert [c[-1] for c in calls] == ["off", "on"]


def test_domctl_retries_count_only_the_retry_counters_and_need_them():
    profile = {"hypercalls": {"domctl": 420},
               "counters": {"domctl: ran shared": 380, "domctl: ran exclusive": 20,
                            "domctl: retried, domctl_lock busy": 12,
                            "domctl: retried, domain_kill_lock busy": 8},
               "locks": {"global lock heap_lock": {"blocked_s": 0.004}}}
    assert domctl_retries_per_op(profile, 16) == 20 / 16
    assert dom0bench._lock_wait(profile, 16) == 0.004 / 16
    # Neither the counters nor a profiled domctl_lock: unknown, not zero.
    assert domctl_retries_per_op({**profile, "counters": {}}, 16) is None
    assert domctl_retries_per_op(None, 16) is None
