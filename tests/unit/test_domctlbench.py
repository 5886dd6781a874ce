"""The domctl fairness benchmark without Xen: its request, the dom0 driver
against a fake libxenctrl (threads, IDs, leftovers), the host's summary."""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pyxen.errors import XenCtrlError
from pyxen.lab.contract import protocol
from pyxen.lab.contract.requests import DomctlRequest
from pyxen.lab.dom0 import domctlfair
from pyxen.lab.host import cli
from pyxen.lab.host.domctlbench import summarise, summary_table


class FakeXc:
    """Domains in a shared dict; ``sticky`` IDs refuse to go (a destroy that
    leaves the domain); ``dying`` IDs refuse creation once (EEXIST)."""

    domains_by_id: dict[int, bool] = {}
    lock = threading.Lock()
    sticky: set[int] = set()
    dying: set[int] = set()
    calls: dict[str, int] = {}
    asked: list[int] = []           # every ID a create was asked for, in order

    def __enter__(self) -> FakeXc:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _count(self, what: str) -> None:
        with self.lock:
            self.calls[what] = self.calls.get(what, 0) + 1

    def create_bare_domain(self, domid: int) -> int:
        self._count("create")
        with self.lock:
            self.asked.append(domid)
            if domid in self.dying:
                self.dying.discard(domid)
                raise XenCtrlError("xc_domain_create", errno.EEXIST, "exists")
            if domid in self.domains_by_id:
                raise XenCtrlError("xc_domain_create", errno.EEXIST, "exists")
            self.domains_by_id[domid] = False
        return domid

    def destroy(self, domid: int) -> None:
        self._count("destroy")
        with self.lock:
            if domid not in self.sticky:
                self.domains_by_id.pop(domid, None)

    def pause(self, domid: int) -> None:
        self._count("pause")
        self.domains_by_id[domid] = True

    def unpause(self, domid: int) -> None:
        self._count("unpause")
        self.domains_by_id[domid] = False

    def domain_info(self, domid: int) -> object:
        self._count("info")
        return object()

    def domains(self) -> list[Any]:
        with self.lock:
            return [type("D", (), {"domid": d})() for d in self.domains_by_id]


@pytest.fixture
def fake_xc(monkeypatch: pytest.MonkeyPatch) -> type[FakeXc]:
    import pyxen.xenctrl
    FakeXc.domains_by_id, FakeXc.sticky, FakeXc.dying, FakeXc.calls = {}, set(), set(), {}
    FakeXc.asked = []
    monkeypatch.setattr(pyxen.xenctrl, "XenCtrl", FakeXc)
    monkeypatch.setattr(domctlfair, "VANISH_S", 0.5)
    return FakeXc


def test_the_request_names_a_bad_value() -> None:
    with pytest.raises(ValueError, match="DomctlRequest.creators must be 0..16, got 17"):
        DomctlRequest(creators=17)
    with pytest.raises(ValueError, match="creators must be at least 1 when there are no "
                                         "readers and no stubs"):
        DomctlRequest(creators=0, readers=0)
    with pytest.raises(ValueError, match="probes must be >= 10"):
        DomctlRequest(probes=3)
    with pytest.raises(ValueError, match=f"stubs must be 0..{protocol.DOMCTL_STUBS_MAX}"):
        DomctlRequest(stubs=protocol.DOMCTL_STUBS_MAX + 1)
    with pytest.raises(ValueError, match="kernel must be an absolute path when there are stubs"):
        DomctlRequest(stubs=1)
    assert DomctlRequest.from_json(DomctlRequest(readers=0).to_json()).readers == 0
    stub_only = DomctlRequest(creators=0, readers=0, stubs=1, kernel=Path("/srv/tinyguest"))
    assert DomctlRequest.from_json(stub_only.to_json()) == stub_only


class FakeStubs:
    """xsstub and xl.destroy for domctlfair.Stubs: each stub is a FakeXc
    domain; its reported domctl count grows by 1000 at every look."""

    def __init__(self, xc: type[FakeXc], first_rc: int = 0) -> None:
        self.xc, self.first_rc = xc, first_rc
        self.ids: dict[str, int] = {}
        self.destroyed: list[str] = []
        self.counted: dict[str, int] = {}

    def start(self, name: str, kernel: Path, workdir: Path, target: int | None = None) -> int:
        assert target == protocol.DOMCTL_FIRST_ID      # the probed domain
        domid = 100 + len(self.ids)
        self.ids[name] = domid
        self.xc.domains_by_id[domid] = False
        return domid

    def started(self, name: str) -> object:
        return domctlfair.xsstub.StubStart(version=24, first_rc=self.first_rc)

    def calls(self, name: str) -> int:
        self.counted[name] = self.counted.get(name, 0) + 1000
        return self.counted[name]

    def destroy(self, name: str) -> None:
        self.destroyed.append(name)
        self.xc.domains_by_id.pop(self.ids[name], None)

    def list_domains(self) -> list[Any]:
        return [type("Row", (), {"name": n, "domid": domid})() for n, domid in self.ids.items()
                if domid in self.xc.domains_by_id]


@pytest.fixture
def fake_stubs(fake_xc: type[FakeXc], monkeypatch: pytest.MonkeyPatch) -> FakeStubs:
    stubs = FakeStubs(fake_xc)
    for name in ("start", "started", "calls"):
        monkeypatch.setattr(domctlfair.xsstub, name, getattr(stubs, name))
    monkeypatch.setattr(domctlfair.xl, "destroy", stubs.destroy)
    monkeypatch.setattr(domctlfair.xl, "list_domains", stubs.list_domains)
    return stubs


def test_stubs_run_only_while_the_loaded_probes_do(fake_xc: type[FakeXc],
                                                   fake_stubs: FakeStubs) -> None:
    req = DomctlRequest(creators=0, readers=0, stubs=2, probes=10, rounds=2,
                        kernel=Path("/srv/tinyguest"))
    result = domctlfair.run(req)
    assert result["errors"] == [] and result["stubs"] == 2
    # The probed domain's creation finished first (an unpause and a pause);
    # the stubs paused at start, unpaused and paused again around each
    # loaded round.
    assert fake_xc.calls["unpause"] == 1 + 2 * 10 * 2 + 2 * 2      # target's, probes', stubs'
    assert fake_xc.calls["pause"] == 1 + 2 * 10 * 2 + 2 + 2 * 2    # and stubs' at start
    assert all(r["stub_calls_per_s"] > 0 for r in result["rounds"])
    assert sorted(fake_stubs.destroyed) == sorted(fake_stubs.ids)
    assert fake_xc.domains_by_id == {}


def test_a_stub_without_the_privilege_stops_the_run(fake_xc: type[FakeXc],
                                                    fake_stubs: FakeStubs) -> None:
    fake_stubs.first_rc = -1
    req = DomctlRequest(creators=1, readers=0, stubs=1, probes=10, rounds=1,
                        kernel=Path("/srv/tinyguest"))
    result = domctlfair.run(req)
    assert result["rounds"] == []
    assert any("does not hold XSM_XS_PRIV" in e for e in result["errors"])
    assert fake_stubs.destroyed == list(fake_stubs.ids)


def test_a_run_times_probes_with_and_without_the_load(fake_xc: type[FakeXc]) -> None:
    fake_xc.dying = {protocol.DOMCTL_FIRST_ID + 1}      # the first creator's first ID
    result = domctlfair.run(DomctlRequest(creators=2, readers=1, probes=20, rounds=2))
    assert result["errors"] == [] and result["leftover_domains"] == []
    assert len(result["rounds"]) == 2
    for r in result["rounds"]:
        assert r["idle_us"]["count"] == r["loaded_us"]["count"] == 40   # pause + unpause
        assert r["creates"] > 0 and r["creates"] == r["destroys"] and r["reads"] > 0
    assert sum(r["busy_ids"] for r in result["rounds"]) == 1
    assert fake_xc.domains_by_id == {}
    # The reader's target, then each creator within its own block of IDs.
    first, block = protocol.DOMCTL_FIRST_ID, protocol.DOMCTL_IDS_PER_CREATOR
    blocks = [range(first + 1 + i * block, first + 1 + (i + 1) * block) for i in range(2)]
    assert fake_xc.asked[0] == first and fake_xc.asked.count(first) == 1   # the target, once
    creators = [d for d in fake_xc.asked if d != first]
    assert all(any(d in b for b in blocks) for d in creators), sorted(set(creators))
    assert all(any(d in b for d in creators) for b in blocks)


def test_domains_left_behind_are_errors(fake_xc: type[FakeXc]) -> None:
    fake_xc.sticky = {protocol.DOMCTL_FIRST_ID + 1}
    result = domctlfair.run(DomctlRequest(creators=1, readers=0, probes=10, rounds=1))
    assert result["leftover_domains"] == [protocol.DOMCTL_FIRST_ID + 1]
    assert any("still exist" in e for e in result["errors"])


def test_domains_there_before_the_run_stop_it(fake_xc: type[FakeXc]) -> None:
    fake_xc.domains_by_id = {protocol.DOMCTL_FIRST_ID + 7: False}
    result = domctlfair.run(DomctlRequest(probes=10, rounds=1))
    assert result["rounds"] == [] and "exist before the run" in result["errors"][0]


def round_(idle: float, loaded_p50: float, loaded_p99: float,
           stub_calls_per_s: float = 0.0) -> dict[str, Any]:
    return {"idle_us": {"p50": idle, "p99": 2 * idle},
            "loaded_us": {"p50": loaded_p50, "p99": loaded_p99, "max": 3 * loaded_p99},
            "creates_per_s": 50.0, "reads_per_s": 900.0, "stub_calls_per_s": stub_calls_per_s}


def test_the_summary_gives_slowdowns_and_ratios_to_stock() -> None:
    runs = [{"variant": "stock", "rounds": [round_(100, 1000, 8000), round_(100, 1200, 10000)]},
            {"variant": "patched", "rounds": [round_(100, 150, 400), round_(110, 165, 440)]},
            {"variant": "broken", "rounds": []}]
    rows = summarise(runs)
    assert [r.variant for r in rows] == ["stock", "patched"]
    stock, patched = rows
    assert stock.slowdown_p50 == 11.0 and stock.p99_vs_stock is None
    assert patched.slowdown_p50 == 1.5 and patched.slowdown_p99 == 2.0
    assert patched.p99_vs_stock == round(420 / 9000, 3)
    out = Console(width=100, record=True)
    out.print(summary_table(rows))
    text = out.export_text()
    assert "0.05x" in text and "p99 vs stock" in text and "patched" in text
    assert "…" not in text                  # nothing cut at 100 columns
    assert "stub/s" not in text             # no stubs ran: no column for them


def test_with_stubs_the_table_says_what_they_did_within_100_columns() -> None:
    runs = [{"variant": variant, "rounds": [round_(160, 247, 20638.4, 752671.0)] * 3}
            for variant in ("stock", "patched+libcache")]
    rows = summarise(runs)
    assert rows[1].stub_calls_per_s == 752671.0
    out = Console(width=100, record=True)
    out.print(summary_table(rows))
    text = out.export_text()
    assert "stub/s" in text and "752671" in text and "patched+libcache" in text
    assert "…" not in text


def test_the_command_refuses_the_proxy_and_bad_values(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with pytest.raises(SystemExit):
        cli.main(["domctlbench", "--variants", "stock,patched+cache"])
    assert "domctlbench measures the hypervisor" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["domctlbench", "--creators", "40"])
    assert "creators must be 0..16" in capsys.readouterr().err


def test_a_round_whose_idle_clock_stood_still_is_left_out_of_the_slowdown(
        caplog: pytest.LogCaptureFixture) -> None:
    def rnd(idle50: float, idle99: float, loaded: float) -> dict[str, Any]:
        return {"idle_us": {"p50": idle50, "p99": idle99, "max": idle99},
                "loaded_us": {"p50": loaded, "p99": loaded * 2, "max": loaded * 3},
                "creates_per_s": 10.0, "reads_per_s": 5.0}
    # The first round's idle p50 is 0 (left out of the p50 slowdown only).
    run = {"variant": "stock",
           "rounds": [rnd(0.0, 200.0, 900.0), rnd(200.0, 400.0, 800.0), rnd(100.0, 200.0, 300.0)]}
    with caplog.at_level("WARNING"):
        (row,) = summarise([run])
    assert row.slowdown_p50 == 3.5                 # median of 4 and 3
    assert row.slowdown_p99 == 4.0                 # median of 9, 4 and 3
    assert "1 of 3 rounds' idle p50 is 0" in caplog.text
    (none,) = summarise([{"variant": "stock", "rounds": [rnd(0.0, 0.0, 900.0)]}])
    assert none.slowdown_p50 is None and none.slowdown_p99 is None
    Console(width=100, record=True).print(summary_table([none]))   # a None prints


def test_a_load_thread_that_cannot_open_its_handle_is_an_error(
        fake_xc: type[FakeXc], monkeypatch: pytest.MonkeyPatch) -> None:
    import pyxen.xenctrl

    class NoMoreHandles(FakeXc):
        opened = 0

        def __enter__(self) -> FakeXc:
            with self.lock:
                NoMoreHandles.opened += 1
                if NoMoreHandles.opened > 1:        # the load threads' own handles
                    raise XenCtrlError("xc_interface_open", errno.EMFILE, "too many open files")
            return self
    monkeypatch.setattr(pyxen.xenctrl, "XenCtrl", NoMoreHandles)
    result = domctlfair.run(DomctlRequest(creators=2, readers=1, probes=10, rounds=1))
    assert result["rounds"][0]["creates"] == result["rounds"][0]["reads"] == 0
    assert len(result["errors"]) == 3
    assert all("too many open files" in e for e in result["errors"])
    assert any("creator0" in e for e in result["errors"])


def test_a_load_thread_killed_by_any_exception_is_an_error(
        fake_xc: type[FakeXc], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_info(self: FakeXc, domid: int) -> object:
        raise RuntimeError("the bindings broke")
    monkeypatch.setattr(FakeXc, "domain_info", broken_info)
    result = domctlfair.run(DomctlRequest(creators=0, readers=1, probes=10, rounds=1))
    assert result["errors"] == ["round 0: reader0: RuntimeError: the bindings broke"]


def test_a_load_thread_that_does_not_stop_is_an_error(
        fake_xc: type[FakeXc], monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def stuck_info(self: FakeXc, domid: int) -> object:
        release.wait(10)                # a hypercall that does not come back
        return object()
    monkeypatch.setattr(FakeXc, "domain_info", stuck_info)
    monkeypatch.setattr(domctlfair, "JOIN_S", 0.2)
    try:
        result = domctlfair.run(DomctlRequest(creators=0, readers=1, probes=10, rounds=1))
    finally:
        release.set()
    assert result["errors"] == ["round 0: reader0 still running 0 s after the stop"]


def test_a_stub_that_fails_to_start_leaves_its_errors_and_the_stubs_left(
        fake_xc: type[FakeXc], fake_stubs: FakeStubs, monkeypatch: pytest.MonkeyPatch) -> None:
    started = fake_stubs.start

    def start(name: str, kernel: Path, workdir: Path, target: int | None = None) -> int:
        if name.endswith("1"):
            raise domctlfair.LabError(f"xl create {name} failed")
        return started(name, kernel, workdir, target)

    def destroy(name: str) -> None:
        raise domctlfair.LabError(f"xl destroy {name} exited 1: busy")
    monkeypatch.setattr(domctlfair.xsstub, "start", start)
    monkeypatch.setattr(domctlfair.xl, "destroy", destroy)
    req = DomctlRequest(creators=1, readers=0, stubs=2, probes=10, rounds=1,
                        kernel=Path("/guest"))
    result = domctlfair.run(req)
    stub0 = fake_stubs.ids[f"{protocol.DOMCTL_STUB_PREFIX}0"]
    assert result["rounds"] == []
    assert any("xl create" in e for e in result["errors"])
    assert f"destroy {protocol.DOMCTL_STUB_PREFIX}0: xl destroy " \
           f"{protocol.DOMCTL_STUB_PREFIX}0 exited 1: busy" in result["errors"]
    assert result["leftover_domains"] == [stub0]
    assert any("still exist" in e for e in result["errors"])


def test_a_target_that_cannot_be_created_or_destroyed_still_gives_a_result(
        fake_xc: type[FakeXc], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: FakeXc, domid: int) -> int:
        raise XenCtrlError("xc_domain_create", errno.ENOMEM, "no memory")
    with monkeypatch.context() as m:
        m.setattr(FakeXc, "create_bare_domain", refuse)
        result = domctlfair.run(DomctlRequest(creators=1, readers=0, probes=10, rounds=1))
    assert result["rounds"] == [] and len(result["errors"]) == 1
    assert "no memory" in result["errors"][0]

    def stuck(self: FakeXc, domid: int) -> None:
        raise XenCtrlError("xc_domain_destroy", errno.EBUSY, "busy")
    fake_xc.domains_by_id = {}
    monkeypatch.setattr(FakeXc, "destroy", stuck)
    result = domctlfair.run(DomctlRequest(creators=0, readers=1, probes=10, rounds=1))
    assert len(result["rounds"]) == 1
    assert any(e.startswith(f"destroy {protocol.DOMCTL_FIRST_ID}: ") for e in result["errors"])
    assert result["leftover_domains"] == [protocol.DOMCTL_FIRST_ID]


def test_main_writes_a_result_when_no_handle_opens(
        fake_xc: type[FakeXc], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    import pyxen.xenctrl

    class NoHandle(FakeXc):
        def __enter__(self) -> FakeXc:
            raise XenCtrlError("xc_interface_open", errno.EACCES, "permission denied")
    monkeypatch.setattr(pyxen.xenctrl, "XenCtrl", NoHandle)
    monkeypatch.setenv(protocol.ENV_OUT, str(tmp_path))
    req = DomctlRequest(creators=1, readers=0, probes=10, rounds=1)
    assert domctlfair.main(["--request", req.to_json()]) == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["rounds"] == [] and "permission denied" in result["errors"][0]


def test_the_creators_bound_is_the_requests_one() -> None:
    from pyxen.lab.contract.requests import DOMCTL_CREATORS_MAX
    DomctlRequest(creators=DOMCTL_CREATORS_MAX)
    with pytest.raises(ValueError, match=f"0..{DOMCTL_CREATORS_MAX}"):
        DomctlRequest(creators=DOMCTL_CREATORS_MAX + 1)
