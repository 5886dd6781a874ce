"""The autoscaling benchmark's rounds without Xen: which boots a run makes
and which replays each runs, how a variant's replays pool into one
section, and the run as a whole against a fake dom0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.autoscale_result import pool_replays, what_was_lost
from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.percentiles import percentiles
from pyxen.lab.host import autoscale, paths
from pyxen.lab.host.autoscale import AutoscaleParams, Boot, boot_plan
from pyxen.lab.host.variants import RunVariant, parse_variant_list
from pyxen.lab.host.vm_options import VMOptions


def plan_names(text: str, rounds: int, share: bool) -> list[tuple[str, list[str]]]:
    return [(b.boots_as.name, [f"{v.name}/{r}" for v, r in b.replays])
            for b in boot_plan(parse_variant_list(text), rounds, share)]


def test_without_shared_boots_each_replay_boots_and_the_variants_take_turns() -> None:
    assert plan_names("stock,patched", 3, False) == [
        ("stock", ["stock/0"]), ("patched", ["patched/0"]),
        ("patched", ["patched/1"]), ("stock", ["stock/1"]),
        ("stock", ["stock/2"]), ("patched", ["patched/2"])]
    assert plan_names("patched+libcache", 1, False) == [
        ("patched+libcache", ["patched+libcache/0"])]


def test_variants_that_differ_only_in_the_library_cache_share_a_boot() -> None:
    plan = boot_plan(parse_variant_list("stock,patched,patched+libcache,patched+cache"), 2, True)
    assert [(b.boots_as.name, [f"{v.name}/{r}" for v, r in b.replays]) for b in plan] == [
        ("stock", ["stock/0"]),
        # Booted without the cache; each replay switches it for itself.
        ("patched", ["patched/0", "patched+libcache/0"]),
        # The proxy is set up at boot: a variant with it boots its own.
        ("patched+cache", ["patched+cache/0"]),
        # The next round: the boots in the other order, and in them the variants.
        ("patched+cache", ["patched+cache/1"]),
        ("patched", ["patched+libcache/1", "patched/1"]),
        ("stock", ["stock/1"])]
    assert [b.shared for b in plan] == [False, True, False, False, True, False]


def test_a_variant_alone_in_its_boot_keeps_its_cache_setting() -> None:
    boot, again = boot_plan([RunVariant("patched", lib_cache=True)], 2, True)
    assert boot.boots_as.lib_cache and not boot.shared and again == Boot(
        boot.boots_as, ((boot.boots_as, 1),))
    assert boot.boots_as.vm_options(VMOptions()).lib_cache


def test_a_run_has_at_least_one_round() -> None:
    with pytest.raises(ValueError, match="rounds: 0"):
        boot_plan(parse_variant_list("stock"), 0)


def replay_result(cold: list[float], **change: Any) -> dict[str, Any]:
    """A replay's result as the dom0 side writes it (a subset of its keys)."""
    return {"cold_start_each_s": cold, "cold_start_s": percentiles(cold),
            "invocation_latency_each_s": [c + 1 for c in cold],
            "invocation_latency_s": percentiles([c + 1 for c in cold]),
            "destroy_each_s": [0.5] * len(cold),
            "invocations": 4, "invocations_done": 4, "invocations_failed": 0,
            "cold_invocations": len(cold), "waited_over_1s": 1, "creates": len(cold),
            "creates_failed": 0, "destroys_failed": 0, "memory_not_returned_mib": 0,
            "xs_requests": 100 * len(cold), "xs_requests_by_op": {"READ": 60, "WRITE": 40},
            "xs_watch_events": {"cache": 3}, "leftover_domains": [],
            "xenstore_nodes_left": [], "peak_instances": len(cold),
            "instances_over_time": [[0.0, len(cold)]], "errors": [],
            "scrub_settle": {"waited_s": 1.0}, "free_memory_mib_before": 900,
            "running": {"up": 2},
            "driver": "pyxen", "boot": 1, "round": 1, **change}


def test_a_variants_replays_pool_into_one_section() -> None:
    a = replay_result([1.0, 2.0, 3.0])
    b = replay_result([10.0, 20.0], leftover_domains=["as-f1-0"], peak_instances=7,
                      errors=["destroy as-f1-0: busy"], round=2)
    pooled = pool_replays([a, b])
    # Percentiles of all the samples together, not of the replays' figures.
    assert pooled["cold_start_each_s"] == [1.0, 2.0, 3.0, 10.0, 20.0]
    assert pooled["cold_start_s"] == {"count": 5, "p50": 3.0, "p90": 20.0, "p99": 20.0,
                                      "max": 20.0}
    assert pooled["invocation_latency_s"]["p50"] == 4.0
    assert pooled["destroy_s"]["count"] == 5
    assert pooled["invocations"] == 8 and pooled["creates"] == 5
    assert pooled["xs_requests"] == 500 and pooled["xs_requests_per_cold_start"] == 100
    assert pooled["xs_requests_by_op"] == {"READ": 120, "WRITE": 80}
    assert pooled["xs_watch_events"] == {"cache": 6}
    assert pooled["peak_instances"] == 7 and pooled["leftover_domains"] == ["round 2: as-f1-0"]
    assert pooled["errors"] == ["round 2: destroy as-f1-0: busy"]
    assert pooled["instances_over_time"] == [[0.0, 3]]           # the first replay's
    assert pooled["driver"] == "pyxen" and not pooled["failed_to_run"]
    # One replay's own circumstances stay with it.
    for key in ("scrub_settle", "free_memory_mib_before", "boot", "round", "running"):
        assert key not in pooled
    assert [r["round"] for r in pooled["replays"]] == [1, 2]
    assert what_was_lost(pooled) == ["round 2: destroy as-f1-0: busy",
                                     "domains left: round 2: as-f1-0"]
    assert what_was_lost(pool_replays([a, replay_result([1.0])])) == []


def test_a_replay_that_did_not_run_is_named_in_its_pooled_section() -> None:
    failed = {"errors": ["dom0 did not boot"], "failed_to_run": True}
    pooled = pool_replays([replay_result([1.0, 2.0]), failed])
    assert pooled["cold_start_s"]["count"] == 2 and not pooled["failed_to_run"]
    assert what_was_lost(pooled) == ["round 2: dom0 did not boot"]
    nothing = pool_replays([failed, failed])
    assert nothing["failed_to_run"] and nothing["cold_start_s"]["count"] == 0
    assert nothing["invocations"] is None and nothing["xs_requests_per_cold_start"] is None
    with pytest.raises(ValueError, match="no replay"):
        pool_replays([])


class FakeDom0:
    """Stands for a booted dom0: records its boots and what each replay ran with."""

    boots: list[tuple[str, bool]] = []
    replays: list[tuple[int, bool | None]] = []
    prefixes: list[str] = []
    fail_boot: set[str] = set()
    leave_behind: set[int] = set()     # replays (counted from 1) that leave a domain

    def __init__(self, staged: str, options: VMOptions) -> None:
        if staged in self.fail_boot:
            raise LabError(f"{staged}: dom0 did not come up")
        self.boots.append((staged, options.lib_cache))
        self.n = len(self.boots)

    def __enter__(self) -> FakeDom0:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def ram_backing(self) -> dict[str, float]:
        return {"rss_mib": 100.0, "huge_mib": 50.0 * self.n, "huge_fraction": 0.5 * self.n}


@pytest.fixture
def fake_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeDom0]:
    FakeDom0.boots, FakeDom0.replays, FakeDom0.prefixes = [], [], []
    FakeDom0.fail_boot, FakeDom0.leave_behind = set(), set()
    guest = tmp_path / "tinyguest"
    guest.write_text("")

    def fake_replay(dom0: FakeDom0, request: Any, lib_cache: bool | None = None) -> dict[str, Any]:
        FakeDom0.replays.append((dom0.n, lib_cache))
        FakeDom0.prefixes.append(request.prefix)
        slow = 2.0 if lib_cache or (lib_cache is None and dom0.boots[dom0.n - 1][1]) else 1.0
        left = [f"{request.prefix}0"] if len(FakeDom0.replays) in FakeDom0.leave_behind else []
        return replay_result([slow * (len(FakeDom0.replays))], round=None, boot=None,
                             leftover_domains=left)

    monkeypatch.setattr(autoscale, "Dom0", FakeDom0)
    monkeypatch.setattr(autoscale, "run_replay", fake_replay)
    monkeypatch.setattr(autoscale, "describe_build", lambda staged: {"build": staged})
    monkeypatch.setattr(paths, "tinyguest_path", lambda: guest)
    monkeypatch.setattr(autoscale, "plot", lambda runs, png: None)
    return FakeDom0


def run(tmp_path: Path, text: str, rounds: int, share: bool) -> dict[str, Any]:
    trace = tmp_path / "t.csv"
    trace.write_text("app,func,end_timestamp,duration\na,f,10,10\na,g,20,5\n")
    params = AutoscaleParams(trace=trace, rounds=rounds, share_boot=share)
    builds: Any = {"stock": "stock", "patched": "patched"}
    return autoscale.run_autoscale(parse_variant_list(text), builds, params, VMOptions(),
                                   tmp_path / "out")


def test_a_shared_boot_switches_the_cache_replay_by_replay(
        fake_lab: type[FakeDom0], tmp_path: Path) -> None:
    doc = run(tmp_path, "patched,patched+libcache", 2, True)
    assert fake_lab.boots == [("patched", False), ("patched", False)]
    assert fake_lab.replays == [(1, False), (1, True), (2, True), (2, False)]
    # Replays sharing a boot name their guests apart.
    assert fake_lab.prefixes == ["fn-1-", "fn-2-", "fn-1-", "fn-2-"]
    sections = doc["autoscale"]
    assert [r["round"] for r in sections["patched"]["replays"]] == [1, 2]
    assert [r["boot"] for r in sections["patched+libcache"]["replays"]] == [1, 2]
    # Each replay says how its boot's RAM was backed; the pooled section does not.
    assert [r["qemu_ram_backing"]["huge_fraction"]
            for r in sections["patched"]["replays"]] == [0.5, 1.0]
    assert "qemu_ram_backing" not in sections["patched"]
    # Replays 1 and 4 ran without the cache, 2 and 3 with it (twice as slow here).
    assert sections["patched"]["cold_start_each_s"] == [1.0, 4.0]
    assert sections["patched+libcache"]["cold_start_each_s"] == [4.0, 6.0]
    assert doc["rounds"] == 2 and doc["boots"] == [
        {"boots_as": "patched", "replays": ["patched round 1", "patched+libcache round 1"]},
        {"boots_as": "patched", "replays": ["patched+libcache round 2", "patched round 2"]}]
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved["autoscale"]["patched+libcache"]["cold_start_s"]["count"] == 2
    assert saved["format"] == 2


def test_a_replay_that_lost_something_ends_its_boot(
        fake_lab: type[FakeDom0], tmp_path: Path) -> None:
    """What it left behind would be found again by the next replay in the
    same boot: that one is not run, and the run says so."""
    fake_lab.leave_behind = {1}
    with pytest.raises(LabError, match="lost something on patched: domains left: round 1"):
        run(tmp_path, "patched,patched+libcache", 2, True)
    assert fake_lab.replays == [(1, False), (2, True), (2, False)]
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    cached = doc["autoscale"]["patched+libcache"]
    assert cached["errors"] == ["round 1: not run: patched's replay before it in the same "
                                "boot lost something"]
    assert cached["cold_start_s"]["count"] == 1      # its second round ran
    assert doc["autoscale"]["patched"]["leftover_domains"] == ["round 1: fn-1-0"]


def test_one_round_without_sharing_runs_as_before(fake_lab: type[FakeDom0],
                                                  tmp_path: Path) -> None:
    doc = run(tmp_path, "patched,patched+libcache", 1, False)
    assert fake_lab.boots == [("patched", False), ("patched", True)]
    # The cache as dom0 was booted: no switch in the replay's environment.
    assert fake_lab.replays == [(1, None), (2, None)]
    section = doc["autoscale"]["patched+libcache"]
    assert "replays" not in section and section["cold_start_each_s"] == [4.0]
    assert (section["boot"], section["round"]) == (2, 1)


def test_a_boot_that_fails_fails_its_replays_and_the_run_says_so(
        fake_lab: type[FakeDom0], tmp_path: Path) -> None:
    fake_lab.fail_boot = {"stock"}
    with pytest.raises(LabError, match="lost something on stock: round 1: stock: dom0 did not"):
        run(tmp_path, "stock,patched", 2, True)
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert doc["autoscale"]["stock"]["failed_to_run"]
    assert doc["autoscale"]["patched"]["cold_start_s"]["count"] == 2
    assert doc["ratios_to_stock"]["patched"]["cold_p50"] is None


def test_the_replay_switches_the_cache_in_its_own_environment() -> None:
    class Dom0:
        def run(self, argv: list[str], timeout: float, env: dict[str, str] | None = None) -> Any:
            self.env = env
            return self

        def json_file(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return {}

    from pyxen.lab.contract.requests import AutoscaleRequest
    req = AutoscaleRequest(Path("/guest"), (0,), (0.0,), (1.0,), keep_alive_s=1.0,
                           memory_mib=16, max_inflight=1)
    dom0 = Dom0()
    autoscale.run_replay(dom0, req, True)  # type: ignore[arg-type]
    assert dom0.env == {protocol.ENV_LIB_CACHE: "1", protocol.ENV_LIBXENSTORE_CACHE: "1"}
    autoscale.run_replay(dom0, req, False)  # type: ignore[arg-type]
    assert dom0.env == {protocol.ENV_LIB_CACHE: "0", protocol.ENV_LIBXENSTORE_CACHE: "0"}
    autoscale.run_replay(dom0, req)  # type: ignore[arg-type]
    assert dom0.env is None
