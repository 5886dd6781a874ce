"""The dom0 storm's phases, run against fakes of Xen (driver, xenstored's
trace, the proxy, the hypervisor's counters, /proc): what each phase records
and the result.json fields built from them."""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pyxen.config import DomainConfig
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.requests import StormRequest
from pyxen.lab.contract.xenprof import SCRUB_BACKGROUND_COUNTER
from pyxen.lab.dom0 import dom0bench, proxystats, tenants
from pyxen.lab.dom0.proccpu import CpuSampler
from pyxen.lab.dom0.xllock import LockUse

#: result.json's fields of one storm, in order.
RESULT_KEYS = [
    "driver", "guests", "concurrency", "memory_mib", "makespan_s", "create_s",
    "running_before_create", "destroy_s", "destroy_makespan_s", "xs_requests_per_create",
    "xs_requests_per_destroy", "xs_create_ops", "xs_client_requests_per_create",
    "xs_client_requests_each", "xs_cache_stats", "xs_create_reach", "xs_requests_each",
    "xs_reads_each",
    "cpu_s_each", "domctl_hypercalls_per_create", "domctl_retries_per_create",
    "lock_wait_s_per_create", "lock_profile", "domctl_hypercalls_per_destroy",
    "domctl_retries_per_destroy", "lock_wait_s_per_destroy",
    "destroy_background_scrubbed_pages", "destroy_lock_profile",
    "xl_lock_wait_s_per_create", "xl_lock_held_s", "xl_lock_max_waiters", "console_ok",
    "errors", "leftover_domains", "baseline_domains", "free_memory_mib_before",
    "free_memory_mib_after", "xs_watch_events",
]
#: Fields that hold wall-clock times (compared by shape only).
TIMES = ("makespan_s", "create_s", "destroy_s", "destroy_makespan_s")


class FakeDriver:
    """Creates fail for ``fail``; destroyed ``stuck`` guests stay listed."""

    def __init__(self, name: str, fail: set[str], stuck: set[str]) -> None:
        self.name, self.fail, self.stuck = name, fail, stuck
        self.live: set[str] = set()
        self.free = 1000
        self.lock = threading.Lock()

    def create(self, config: DomainConfig, config_file: Path) -> None:
        assert config_file.read_text() == config.to_xl_config()
        if config.name in self.fail:
            raise LabError(f"cannot create {config.name}")
        with self.lock:
            self.live.add(config.name)
            self.free -= config.memory_mib

    def destroy(self, name: str) -> None:
        with self.lock:
            if name not in self.live:
                raise LabError(f"no domain {name}")
            if name not in self.stuck:
                self.live.discard(name)
                self.free += 16

    def names(self) -> set[str]:
        with self.lock:
            return self.live | {"Domain-0"}

    def free_memory_mib(self) -> int:
        return self.free


class Ticker:
    """Counts calls (instruments read differently every time)."""

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.n += 1
            return self.n


def install_fakes(mp: pytest.MonkeyPatch, module: ModuleType, tmp: Path, *,
                  proxy: bool, profiled: bool) -> None:
    """Fakes of everything ``module`` (dom0bench) reads outside Python."""
    tick = Ticker()

    class Trace:
        def __init__(self, path: Path) -> None:
            pass

        def take(self) -> Counter[str]:
            k = tick()
            return Counter({"READ": 3 * k, "WRITE": k, "WATCH": k % 2})

        def take_text(self) -> str:
            """The whole storm's watch events (one of a cache's, two others)
            and the create phase's requests (a read outside a transaction,
            one inside)."""
            return "".join(
                f"OUT 0x1 20261205 00:00:00 WATCH_EVENT (/local/domain/1 {token} )\n"
                for token in ("xs-cache:", "mine", "yours")) + (
                "IN 0x2 20261205 00:00:00 READ (/local/domain/1/name )\n"
                "IN 0x2 20261205 00:00:00 TRANSACTION_START ( )\n"
                "IN 0x2 20261205 00:00:00 READ (/local/domain/1/vm )\n")

    class Profiler:
        def __init__(self) -> None:
            self.k = 0

        def reset(self) -> None:
            self.k = tick()

        def read(self) -> dict[str, Any] | None:
            if not profiled:
                return None
            k = self.k
            return {"hypercalls": {"domctl": 40 * k},
                    "counters": {"domctl: retried, domctl_lock busy": 3 * k,
                                 SCRUB_BACKGROUND_COUNTER: 512 * k},
                    "locks": {"global lock heap_lock": {"blocked_s": 0.01 * k}}}

    class Cpu:
        def sample(self) -> dict[str, float]:
            k = tick()
            return {"xenstored": 0.01 * k * k, "dom0": 0.1 * k}

        delta = staticmethod(CpuSampler.delta)

    class Sampler:
        use = LockUse(held_s=1.5, wait_s=0.6, max_waiters=2, samples=10)

        def __enter__(self) -> Sampler:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    async def query_control(path: Path) -> dict[str, Any]:
        k = tick()
        return {"requests": 7 * k, "hits": k}

    mp.setattr(module, "TraceReader", Trace)
    mp.setattr(module, "Profiler", Profiler)
    mp.setattr(module, "CpuSampler", Cpu)
    mp.setattr(module, "LockSampler", Sampler)
    mp.setattr(proxystats, "query_control", query_control)
    mp.setattr(module, "wait_console", lambda names, timeout: {n: not n.endswith("-2")
                                                               for n in names})
    mp.setattr(module, "VANISH_WAIT_S", 0.0)
    if proxy:
        mp.setenv(protocol.ENV_XS_CACHE_CONTROL, str(tmp / "control"))
    else:
        mp.delenv(protocol.ENV_XS_CACHE_CONTROL, raising=False)


def run_storm(module: ModuleType, tmp: Path, driver: str, concurrency: int) -> dict[str, Any]:
    """A storm of 6 guests: g-1's create fails, g-2 prints nothing, g-4 does not go."""
    fake = FakeDriver(driver, fail={"g-1"}, stuck={"g-4"})
    fake.live.add("other")   # a domain there before the storm
    result: dict[str, Any] = module.storm(6, concurrency, tmp / "kernel", 16, "g-",
                                          tmp / "work", tmp, fake, ("create", "destroy"))
    return result


def shape(result: dict[str, Any]) -> dict[str, Any]:
    """The result with its wall-clock times replaced by whether each was measured."""
    out = dict(result)
    for key in TIMES:
        v = out[key]
        out[key] = [t is not None for t in v] if isinstance(v, list) else v is not None
    if out["cpu_s_each"]:
        out["cpu_s_each"] = [{k: x for k, x in e.items() if k != "wall"} if e else e
                             for e in out["cpu_s_each"]]
    out["errors"] = sorted(out["errors"])
    return out


CASES = [("pyxen", 1, False, False), ("pyxen", 1, True, True), ("xl", 1, False, True),
         ("pyxen", 3, True, True), ("xl", 2, False, False)]


@pytest.mark.parametrize("driver,concurrency,proxy,profiled", CASES)
def test_the_storm_keeps_result_json_fields(monkeypatch, tmp_path, driver, concurrency,
                                            proxy, profiled):
    install_fakes(monkeypatch, dom0bench, tmp_path, proxy=proxy, profiled=profiled)
    r = run_storm(dom0bench, tmp_path, driver, concurrency)
    assert list(r) == RESULT_KEYS
    assert (r["driver"], r["guests"], r["concurrency"], r["memory_mib"]) == \
        (driver, 6, concurrency, 16)
    assert [t is None for t in r["create_s"]] == [False, True, False, False, False, False]
    assert sorted(r["errors"]) == ["create g-1: cannot create g-1",
                                   "destroy g-1: no domain g-1"]
    assert r["console_ok"] == 5
    assert r["leftover_domains"] == ["g-4"]
    assert r["baseline_domains"] == ["Domain-0", "other"]
    assert (r["free_memory_mib_before"], r["free_memory_mib_after"]) == (1000, 984)
    assert sum(r["xs_create_ops"].values()) / 5 == r["xs_requests_per_create"]
    assert r["xs_watch_events"] == {"cache": 1, "other": 2}
    per_c1 = ("xs_client_requests_each", "xs_requests_each", "xs_reads_each", "cpu_s_each")
    if concurrency == 1:
        assert r["running_before_create"] == [0, 1, 1, 2, 3, 4]
        assert r["xs_requests_each"][1] is None and r["xs_reads_each"][1] is None
        assert all(r[k] is not None for k in per_c1)
        if not proxy:
            assert r["xs_client_requests_each"] == r["xs_requests_each"]
        # per create (5 of 6 created), from the create phase's trace
        assert r["xs_create_reach"] == [{"cacheable": 1 / 5, "in_transaction": 1 / 5,
                                         "other": 1 / 5}]
    else:
        assert all(r[k] is None for k in per_c1)
        assert r["xs_create_reach"] is None
    if not proxy:
        assert r["xs_cache_stats"] is None
        assert r["xs_client_requests_per_create"] == r["xs_requests_per_create"]
    else:
        assert set(r["xs_cache_stats"]) == {"requests", "hits"}
    xl_keys = ("xl_lock_wait_s_per_create", "xl_lock_held_s", "xl_lock_max_waiters")
    if driver == "xl":
        assert [r[k] for k in xl_keys] == [0.6 / 5, 1.5, 2]
    else:
        assert [r[k] for k in xl_keys] == [None] * 3
    prof_keys = [k for k in RESULT_KEYS if not k.startswith("xl_") and (
        "domctl" in k or "lock_wait_s" in k or k.endswith("lock_profile")
        or "background_scrubbed" in k)]
    assert all((r[k] is not None) == profiled for k in prof_keys)
    if profiled:
        assert r["destroy_background_scrubbed_pages"] == \
            r["destroy_lock_profile"]["counters"][SCRUB_BACKGROUND_COUNTER] > 0


def test_adding_each_create_back_sums_the_phase():
    phase = Counter({"READ": 2})
    assert dom0bench.add_each(phase, [{"READ": 3, "WRITE": 1}, None, {"WRITE": 2}]) == \
        Counter({"READ": 5, "WRITE": 3})


def test_the_accounting_divides_by_the_creates_that_succeeded(tmp_path):
    s = dom0bench.Storm(guests=4, concurrency=1, memory_mib=16,
                        driver=FakeDriver("pyxen", set(), set()), configs=[], cfg_files=[],
                        trace=None, proxy=None, profiler=None,  # type: ignore[arg-type]
                        progress=None, errors=["create g-3: boom"])  # type: ignore[arg-type]
    created = dom0bench.Created(
        create_s=[0.5, 0.6, 0.7, None], makespan_s=2.0, running_before=[0, 1, 2, 3],
        ops=Counter({"READ": 30, "WRITE": 12}), client_requests=60, profile=None,
        proxy_stats=None, xl_lock=None,
        each_ops=[{"READ": 10, "WRITE": 4}, {"READ": 10}, {"READ": 10, "WRITE": 8}, None],
        each_client=[20, 20, 20, None], each_cpu=[None] * 4)
    destroyed = dom0bench.Destroyed(destroy_s=[0.1] * 4, makespan_s=0.5,
                                    ops=Counter({"RM": 8}), profile=None)
    r = dom0bench.account(s, dom0bench.Baseline(500, {"Domain-0"}), created, 3, destroyed,
                          dom0bench.Aftermath(set(), 500))
    # All but the whole storm's watch events, which storm() adds.
    assert list(r) == [k for k in RESULT_KEYS if k != "xs_watch_events"]
    assert r["xs_requests_per_create"] == 42 / 3
    assert r["xs_client_requests_per_create"] == 20
    assert r["xs_requests_per_destroy"] == 2
    assert r["xs_requests_each"] == [14, 10, 18, None]
    assert r["xs_reads_each"] == [10, 10, 10, None]
    assert r["errors"] == ["create g-3: boom"]


def test_destroying_a_guest_whose_create_failed_is_an_error_not_a_crash():
    """A create that failed leaves no domid: its destroy is recorded as an
    error of the storm (LabError), where it used to end the whole run with a
    KeyError and no result.json."""
    import threading

    from pyxen.lab.contract.errors import LabError
    from pyxen.lab.dom0.drivers import PyxenDriver

    from types import SimpleNamespace

    driver = object.__new__(PyxenDriver)
    driver.domids, driver.lock = {}, threading.Lock()
    driver.host = SimpleNamespace(domains=lambda: [])          # and not listed
    with pytest.raises(LabError, match="bench-0 was not created"):
        driver.destroy("bench-0")


# Other tenants' guests (StormRequest.running): pyxen.lab.dom0.tenants.

@pytest.fixture
def quiet_tenants(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Consoles seen at once (except names in ``silent``), xenstored's open
    files counted from a ticker, and no waiting for destroyed guests."""
    from pyxen.lab.dom0 import tenants
    state: dict[str, Any] = {"silent": set(), "fds": itertools.count(10, 64)}
    monkeypatch.setattr(tenants, "wait_console", lambda names, timeout: {
        n: n not in state["silent"] for n in names})
    monkeypatch.setattr(tenants, "xenstored_fds", lambda: next(state["fds"]))
    monkeypatch.setattr(tenants, "VANISH_WAIT_S", 0.0)
    return state


def test_tenants_are_created_as_the_storm_creates_and_destroyed_after(
        tmp_path: Path, quiet_tenants: dict[str, Any]) -> None:
    from pyxen.lab.dom0 import tenants
    driver = FakeDriver("xl", fail={"s-r2"}, stuck=set())
    quiet_tenants["silent"] = {"s-r3"}
    t = tenants.start(driver, 5, Path("/guest"), 16, "s-", tmp_path, storm_mib=64)
    assert t.names == [f"s-r{i}" for i in range(5)]
    assert driver.live == {"s-r0", "s-r1", "s-r3", "s-r4"}
    assert sorted(t.up) == ["s-r0", "s-r1", "s-r4"]
    assert sorted(t.errors) == ["create tenant s-r2: cannot create s-r2",
                                "tenant s-r3 did not print its line in 120 s"]
    assert t.as_json() == {"count": 5, "up": 3, "start_s": pytest.approx(0, abs=1),
                           "xenstored_fds_without": 10, "xenstored_fds_with": 74}
    assert tenants.stop(driver, t) == []
    assert driver.live == set()


def test_tenants_that_do_not_fit_fail_before_any_create(
        tmp_path: Path, quiet_tenants: dict[str, Any]) -> None:
    from pyxen.lab.dom0 import tenants
    driver = FakeDriver("pyxen", fail=set(), stuck=set())   # 1000 MiB free
    with pytest.raises(LabError, match=r"64 running guests of 16 MiB and the storm's "
                                       r"16 MiB need about 1168 MiB.*--memory"):
        tenants.start(driver, 64, Path("/guest"), 16, "s-", tmp_path, storm_mib=16)
    assert driver.live == set()
    assert tenants.start(driver, 0, Path("/guest"), 16, "s-", tmp_path, 16).as_json()["count"] == 0


def test_tenants_left_behind_are_reported_as_leftovers(
        tmp_path: Path, quiet_tenants: dict[str, Any]) -> None:
    from pyxen.lab.dom0 import tenants
    driver = FakeDriver("xl", fail=set(), stuck={"s-r1"})
    t = tenants.start(driver, 2, Path("/guest"), 16, "s-", tmp_path, storm_mib=16)
    assert tenants.stop(driver, t) == ["s-r1"]


def test_a_storm_beside_tenants_reports_them_and_always_destroys_them(
        tmp_path: Path, quiet_tenants: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    driver = FakeDriver("xl", fail=set(), stuck=set())
    seen_live: list[set[str]] = []

    def storm(*a: Any) -> dict[str, Any]:
        seen_live.append(set(driver.live))
        return {k: [] if k in ("errors", "leftover_domains") else 0 for k in RESULT_KEYS}

    monkeypatch.setattr(dom0bench, "storm", storm)
    monkeypatch.setattr(dom0bench, "xs_trace_off", contextlib.nullcontext)
    monkeypatch.setattr(dom0bench, "settle_scrub", lambda timeout: {"waited_s": 0.0})
    result = dom0bench.run(2, 1, Path("/guest"), 16, "b-", tmp_path, tmp_path, driver,
                           running=3)
    assert seen_live == [{"b-r0", "b-r1", "b-r2"}] * 2
    assert result["running"]["count"] == 3 and result["running"]["up"] == 3
    assert driver.live == set() and result["errors"] == []

    def failing(*a: Any) -> dict[str, Any]:
        raise LabError("the storm broke")

    monkeypatch.setattr(dom0bench, "storm", failing)
    with pytest.raises(LabError, match="the storm broke"):
        dom0bench.run(2, 1, Path("/guest"), 16, "c-", tmp_path, tmp_path, driver, running=2)
    assert driver.live == set()


def test_a_tenants_stop_that_raises_does_not_hide_the_storms_error(
        tmp_path: Path, quiet_tenants: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    from pyxen.lab.dom0 import tenants
    driver = FakeDriver("xl", fail=set(), stuck=set())

    def failing(*a: Any) -> dict[str, Any]:
        raise LabError("the storm broke")

    def stop(*a: Any) -> list[str]:
        raise OSError("xenstored went away")

    monkeypatch.setattr(dom0bench, "storm", failing)
    monkeypatch.setattr(dom0bench, "xs_trace_off", contextlib.nullcontext)
    monkeypatch.setattr(dom0bench, "settle_scrub", lambda timeout: {"waited_s": 0.0})
    monkeypatch.setattr(tenants, "stop", stop)
    with pytest.raises(LabError, match="the storm broke") as info:
        dom0bench.run(2, 1, Path("/guest"), 16, "c-", tmp_path, tmp_path, driver, running=1)
    assert "clean-up: tenants: OSError: xenstored went away" in info.value.__notes__


def test_the_pyxen_driver_destroys_a_listed_guest_it_has_no_domid_for() -> None:
    """A clean-up destroys by name what is still listed: a guest whose create
    raised after libxl made it, or whose first destroy failed."""
    import threading
    from types import SimpleNamespace

    from pyxen.lab.dom0.drivers import PyxenDriver

    destroyed: list[int] = []
    failures = [RuntimeError("libxl said no")]

    def destroy(domid: int) -> None:
        if domid == 7 and failures:
            raise failures.pop()
        destroyed.append(domid)

    driver = object.__new__(PyxenDriver)
    driver.domids, driver.lock = {"b-1": 7}, threading.Lock()
    driver.host = SimpleNamespace(xl=SimpleNamespace(destroy=destroy),
                                  domains=lambda: [SimpleNamespace(name="b-0", domid=5)])
    driver.destroy("b-0")                       # listed, never recorded
    with pytest.raises(RuntimeError):
        driver.destroy("b-1")                   # the first destroy fails ...
    driver.destroy("b-1")                       # ... and it can be tried again
    assert destroyed == [5, 7] and driver.domids == {}


def test_a_storm_waits_for_xen_to_finish_scrubbing_free_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pyxen.xenctrl
    dumps = iter([3000, 1200, 0])

    class FakeXc:
        def __enter__(self) -> FakeXc:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def heap_dump(self) -> str:
            n = next(dumps)
            return "(XEN) 'H' pressed -> dumping heap info (now = 1)\n" + (
                f"(XEN) Node 0 has {n} unscrubbed pages\n" if n else "")

    monkeypatch.setattr(pyxen.xenctrl, "XenCtrl", FakeXc)
    from pyxen.lab.dom0 import settle
    monkeypatch.setattr(settle.time, "sleep", lambda s: None)
    got = settle.settle_scrub(60.0)
    assert got["unscrubbed_pages_at_start"] == 3000 and got["unscrubbed_pages_left"] == 0


# How a storm fails: a create raising anything is that guest's error; a
# storm that breaks off destroys its guests; main hands back an error result.

class TimeoutDriver(FakeDriver):
    """Creates of ``hang`` raise what subprocess.run(timeout=) raises."""

    def __init__(self, name: str, hang: set[str]) -> None:
        super().__init__(name, fail=set(), stuck=set())
        self.hang = hang

    def create(self, config: DomainConfig, config_file: Path) -> None:
        if config.name in self.hang:
            raise subprocess.TimeoutExpired(["xl", "create"], 300)
        super().create(config, config_file)


def test_a_create_raising_anything_is_that_guests_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, dom0bench, tmp_path, proxy=False, profiled=False)
    driver = TimeoutDriver("xl", hang={"g-3"})
    r = dom0bench.storm(6, 1, tmp_path / "kernel", 16, "g-", tmp_path / "work", tmp_path,
                        driver, ("create", "destroy"))
    assert [t is None for t in r["create_s"]] == [False] * 3 + [True] + [False] * 2
    assert "create g-3: TimeoutExpired: Command '['xl', 'create']' timed out after " \
           "300 seconds" in r["errors"]
    assert driver.live == set() and r["leftover_domains"] == []


def test_a_storm_that_breaks_off_destroys_its_guests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, dom0bench, tmp_path, proxy=False, profiled=False)

    def broken(names: Any, timeout: float) -> dict[str, bool]:
        raise RuntimeError("console log unreadable")

    monkeypatch.setattr(dom0bench, "wait_console", broken)
    driver = FakeDriver("pyxen", fail=set(), stuck={"g-1"})
    driver.live.add("g-other")   # not the storm's: left alone
    with pytest.raises(RuntimeError, match="console log unreadable") as info:
        dom0bench.storm(3, 2, tmp_path / "kernel", 16, "g-", tmp_path / "work", tmp_path,
                        driver, ("create", "destroy"))
    assert driver.live == {"g-1", "g-other"}
    assert info.value.__notes__ == ["clean-up: storm guests left: g-1"]


def test_tenants_are_destroyed_when_their_start_breaks_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenants, "xenstored_fds", lambda: None)
    monkeypatch.setattr(tenants, "VANISH_WAIT_S", 0.0)

    def broken(names: Any, timeout: float) -> dict[str, bool]:
        raise RuntimeError("console log unreadable")

    monkeypatch.setattr(tenants, "wait_console", broken)
    storms: list[Any] = []
    monkeypatch.setattr(dom0bench, "storm", lambda *a: storms.append(a))
    driver = FakeDriver("xl", fail=set(), stuck=set())
    with pytest.raises(RuntimeError, match="console log unreadable"):
        dom0bench.run(2, 1, Path("/guest"), 16, "b-", tmp_path, tmp_path, driver, running=3)
    assert storms == [] and driver.live == set()


def test_a_tenant_create_raising_anything_is_an_error_of_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenants, "xenstored_fds", lambda: None)
    monkeypatch.setattr(tenants, "wait_console", lambda names, t: {n: True for n in names})
    driver = TimeoutDriver("xl", hang={"s-r1"})
    t = tenants.start(driver, 3, Path("/guest"), 16, "s-", tmp_path, storm_mib=16)
    assert driver.live == {"s-r0", "s-r2"} and t.up == ["s-r0", "s-r2"]
    assert t.errors == ["create tenant s-r1: TimeoutExpired: Command '['xl', 'create']' "
                        "timed out after 300 seconds"]


def test_main_hands_back_an_error_result_when_the_storm_breaks_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*a: Any, **kw: Any) -> dict[str, Any]:
        exc = KeyError("domid")
        exc.add_note("clean-up: storm guests left: bench-0")
        raise exc

    monkeypatch.setattr(dom0bench, "run", broken)
    monkeypatch.setitem(dom0bench.DRIVERS, "pyxen", lambda: None)
    monkeypatch.setenv(protocol.ENV_OUT, str(tmp_path))
    req = StormRequest(guests=2, concurrency=1, kernel=Path("/guest"), memory_mib=16)
    assert dom0bench.main(["--request", req.to_json()]) == 2
    assert json.loads((tmp_path / protocol.RESULT_FILE).read_text()) == {"errors": [
        "the storm broke off: KeyError: 'domid'", "clean-up: storm guests left: bench-0"]}
    assert "KeyError" in capsys.readouterr().err
