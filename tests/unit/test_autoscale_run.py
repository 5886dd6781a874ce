"""The autoscaling benchmark without Xen: the dom0 replay against a fake
driver (real time, short durations), its statistics, and the host's
request, table, ratios and command line."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pyxen.config import DomainConfig
from pyxen.lab.contract import protocol
from pyxen.lab.contract.autoscale_result import what_was_lost
from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.percentiles import percentiles
from pyxen.lab.contract.requests import AutoscaleRequest
from pyxen.lab.dom0 import autoscale
from pyxen.lab.dom0.drivers import GUEST_BANNER
from pyxen.lab.host import cli
from pyxen.lab.host.autoscale import AutoscaleParams, ratios, summary_table

KERNEL = Path("/guest")


class ConsoleDriver:
    """Creates print the banner to the console log (after ``boot_s``);
    creates of names in ``fail`` raise; destroys forget the guest, but of
    names in ``fail_destroy``, which raise."""

    name = "fake"

    def __init__(self, logs: Path, fail: set[str] = frozenset(), boot_s: float = 0.02,
                 silent: set[str] = frozenset(), fail_destroy: set[str] = frozenset()) -> None:
        self.logs, self.fail, self.boot_s, self.silent = logs, fail, boot_s, silent
        self.fail_destroy = fail_destroy
        self.live: set[str] = set()
        self.created: list[str] = []
        self.lock = threading.Lock()

    def create(self, config: DomainConfig, config_file: Path) -> None:
        if config.name in self.fail:
            raise LabError(f"cannot create {config.name}")
        with self.lock:
            self.live.add(config.name)
            self.created.append(config.name)
        if config.name not in self.silent:
            threading.Timer(self.boot_s, lambda: (self.logs / f"guest-{config.name}.log")
                            .write_text(GUEST_BANNER + ", nr_pages=4096\n")).start()

    def destroy(self, name: str) -> None:
        if name in self.fail_destroy:
            raise LabError(f"cannot destroy {name}")
        with self.lock:
            if name not in self.live:
                raise LabError(f"no domain {name}")
            self.live.discard(name)

    def names(self) -> set[str]:
        with self.lock:
            return set(self.live)

    def free_memory_mib(self) -> int:
        return 1000


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(protocol.ENV_CONSOLE_LOG_DIR, str(tmp_path))
    return tmp_path


def request(funcs: list[int], starts: list[float], durations: list[float],
            keep_alive: float = 0.3) -> AutoscaleRequest:
    return AutoscaleRequest(KERNEL, tuple(funcs), tuple(starts), tuple(durations),
                            keep_alive_s=keep_alive, memory_mib=16, max_inflight=4)


def test_a_replay_reuses_warm_instances_and_destroys_every_one(logs: Path,
                                                               tmp_path: Path) -> None:
    driver = ConsoleDriver(logs)
    # f0 at 0 and again at 0.2 (warm: keep-alive 0.3), f1 at 0.05; f0 at 1.0
    # comes after its instance's keep-alive: cold again.
    req = request([0, 1, 0, 0], [0.0, 0.05, 0.2, 1.0], [0.05, 0.05, 0.05, 0.05])
    r = autoscale.replay(req, driver, tmp_path / "work")
    s = autoscale.summarise(r)
    assert s["invocations"] == s["invocations_done"] == 4 and s["invocations_failed"] == 0
    assert s["creates"] == 3 and s["cold_invocations"] == 3
    assert s["cold_start_s"]["count"] == 3 and s["cold_start_s"]["p50"] >= 0.02
    assert driver.live == set() and sorted(driver.created) == ["fn-0", "fn-1", "fn-2"]
    assert s["peak_instances"] == 2 and s["instances_over_time"][-1][1] == 0
    assert s["destroy_s"]["count"] == 3 and s["errors"] == []
    lat = s["invocation_latency_s"]
    assert lat["count"] == 4 and lat["max"] >= 0.05


def test_a_failed_create_fails_its_invocation_and_is_counted(logs: Path,
                                                              tmp_path: Path) -> None:
    driver = ConsoleDriver(logs, fail={"fn-1"}, silent={"fn-2"})
    monkey_wait = autoscale.CONSOLE_WAIT_S
    autoscale.CONSOLE_WAIT_S = 0.3
    try:
        req = request([0, 1, 2], [0.0, 0.0, 0.0], [0.05, 0.05, 0.05])
        s = autoscale.summarise(autoscale.replay(req, driver, tmp_path / "work"))
    finally:
        autoscale.CONSOLE_WAIT_S = monkey_wait
    assert s["invocations_done"] == 1 and s["invocations_failed"] == 2
    assert s["creates_failed"] == 2
    assert sorted(e.split(":")[0] for e in s["errors"]) == ["create fn-1", "create fn-2"]
    assert "no console line" in " ".join(s["errors"])
    assert driver.live == set()       # the silent guest was destroyed too


def test_a_failed_destroy_is_counted_and_reported(logs: Path, tmp_path: Path) -> None:
    driver = ConsoleDriver(logs, fail_destroy={"fn-1"})
    req = request([0, 1], [0.0, 0.0], [0.05, 0.05], keep_alive=0.1)
    s = autoscale.summarise(autoscale.replay(req, driver, tmp_path / "work"))
    assert s["invocations_done"] == 2 and s["creates_failed"] == 0
    assert s["destroys_failed"] == 1 and s["destroy_s"]["count"] == 1
    assert [e.split(":")[0] for e in s["errors"]] == ["destroy fn-1"]
    assert driver.live == {"fn-1"}    # left for the run's own check to find


def test_percentiles_are_nearest_rank() -> None:
    p = percentiles([float(v) for v in range(1, 101)])
    assert (p["p50"], p["p90"], p["p99"], p["max"], p["count"]) == (50.0, 90.0, 99.0, 100.0, 100)
    assert percentiles([])["p50"] is None


@pytest.mark.parametrize("field,value,message", [
    ("starts", (1.0, 0.5), "ascending"),
    ("durations", (1.0,), "2 finite durations"),
    ("funcs", (), "one or more function indexes"),
    ("keep_alive_s", float("inf"), "finite number of seconds"),
])
def test_a_bad_request_names_its_field(field: str, value: Any, message: str) -> None:
    doc: dict[str, Any] = {"kernel": KERNEL, "funcs": (0, 1), "starts": (0.0, 1.0),
                           "durations": (1.0, 1.0)}
    doc[field] = value
    with pytest.raises(ValueError, match=f"AutoscaleRequest.{field} must be .*{message}"):
        AutoscaleRequest(**doc)


def test_the_host_sends_the_transformed_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("app,func,end_timestamp,duration\na,f,10,10\na,g,20,5\n")
    params = AutoscaleParams(trace=trace, speedup=5)
    before, schedule = params.load()
    req = params.request(schedule, KERNEL)
    assert req.funcs == (0, 1) and req.starts == (0.0, 3.0) and req.durations == (2.0, 1.0)
    assert req.keep_alive_s == 120.0          # 600 s / 5
    assert AutoscaleRequest.from_json(req.to_json()) == req
    with pytest.raises(ValueError, match="lower --replicas"):
        AutoscaleParams(trace=Path(__file__).parents[2] / "data" / "traces"
                        / "azure2021-sample-200.csv", replicas=200).validate()
    with pytest.raises(LabError, match="cannot read the trace"):
        AutoscaleParams(trace=tmp_path / "missing.csv").validate()


SAMPLE = Path(__file__).parents[2] / "data" / "traces" / "azure2021-sample-200.csv"


def test_too_many_replicas_are_refused_before_the_trace_is_transformed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pyxen.lab.contract.faastrace import Transform
    applied: list[int] = []
    real = Transform.apply
    monkeypatch.setattr(Transform, "apply",
                        lambda self, trace: applied.append(self.replicas) or real(self, trace))
    # 199 invocations x 20000 replicas once filled 1.3 GB before this check.
    with pytest.raises(ValueError, match=r"^the transformed trace has 3980000 invocations, "
                                         "more than one request to dom0 carries: lower --replicas"):
        AutoscaleParams(trace=SAMPLE, replicas=20_000).validate()
    assert applied == []
    with pytest.raises(ValueError, match="has 7562 invocations, .* lower --replicas"):
        AutoscaleParams(trace=SAMPLE, replicas=38).validate()     # the later, exact check
    assert applied == [38]


@pytest.mark.parametrize("rows,kwargs,change", [
    ("a,f,10,1\n", {"speedup": 1e-306}, "raise --speedup"),       # once 2,195 characters
    # (the replay starts at the first start: a row at 0 makes the last one count whole)
    ("a,f,1,1\na,f,1e300,1\n", {}, "raise --speedup"),
    ("a,f,10,1\n", {"keep_alive_s": 1e300}, "lower --keep-alive"),
    ("a,f,1,1\na,f,6100000,1\n", {"keep_alive_s": 60}, "raise --speedup"),
    ("a,f,1,1\na,f,6000000,1\n", {"keep_alive_s": 5000},
     "raise --speedup or lower --keep-alive"),
])
def test_a_replay_longer_than_the_bound_is_refused_naming_the_option(
        tmp_path: Path, rows: str, kwargs: dict[str, Any], change: str) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("app,func,end_timestamp,duration\n" + rows)
    with pytest.raises(ValueError, match=r"^the replay would last .* more than the 7 days a "
                                         f"replay may last: {change}$") as exc:
        AutoscaleParams(trace=trace, **kwargs).validate()
    assert len(str(exc.value)) < 250


def test_a_replay_at_the_bound_is_accepted(tmp_path: Path) -> None:
    from pyxen.lab.contract.faastrace import MAX_REPLAY_S
    trace = tmp_path / "t.csv"
    # the first start at 0: the replay lasts MAX_REPLAY_S exactly
    trace.write_text(f"app,func,end_timestamp,duration\na,f,1,1\na,f,{MAX_REPLAY_S - 100},1\n")
    AutoscaleParams(trace=trace, speedup=1, keep_alive_s=100).validate()
    with pytest.raises(ValueError, match="the replay would last"):
        AutoscaleParams(trace=trace, speedup=1, keep_alive_s=101).validate()


def test_a_trace_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    trace = tmp_path / "bom.csv"
    trace.write_bytes(b"\xef\xbb\xbfapp,func,end_timestamp,duration\na,f,10,10\n")
    before, _ = AutoscaleParams(trace=trace).load()
    assert before.functions == ("a/f",)


def test_the_sample_trace_is_installed_with_its_attribution() -> None:
    from pyxen.lab.host import paths
    sample = paths.sample_trace()
    assert sample == paths.package_data("traces/azure2021-sample-200.csv")
    assert sample.read_bytes() == SAMPLE.read_bytes()
    assert "CC-BY 4.0" in (sample.parent / "README.md").read_text()


def test_without_the_sample_trace_autoscale_says_to_pass_trace(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pyxen.lab.host import paths
    monkeypatch.setattr(paths, "package_data", lambda name: tmp_path / name)
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)
    monkeypatch.setattr(cli.hostdeps, "check", lambda: pytest.fail("checked hosts deps"))
    assert cli.main(["autoscale", "--out", str(tmp_path / "o")]) == 2
    assert "the sample trace is not installed" in (err := capsys.readouterr().err)
    assert "pass --trace FILE" in err


def _run(variant: str, p50: float, p99: float) -> dict[str, Any]:
    pct = {"count": 10, "p50": p50, "p90": p99, "p99": p99, "max": p99}
    return {"variant": variant, "cold_start_s": pct, "invocation_latency_s": pct,
            "waited_over_1s": 2, "invocations_failed": 0, "creates_failed": 0,
            "peak_instances": 5, "xs_requests_per_cold_start": 3 * p99 + 0.4}


def test_ratios_and_the_table_compare_each_variant_with_stock() -> None:
    runs = [_run("stock", 2.0, 8.0), _run("patched", 0.5, 1.0), _run("patched+cache", 0.4, 1.0)]
    rel = ratios(runs)
    assert rel["patched"]["cold_p50"] == 0.25 and rel["patched"]["cold_p99"] == 0.125
    assert rel["stock"]["cold_p99"] == 1.0
    con = Console(width=100, record=True)
    con.print(summary_table(runs))
    text = con.export_text()
    assert "patched+cache" in text and "0.12x" in text and "…" not in text
    assert "ratio to stock" in text
    cells = [c.strip() for line in text.splitlines()
             for c in line.replace("┃", "│").split("│")]
    assert "xs" in cells and "24" in cells   # stock: 24.4 requests per cold start
    # A run without xenstored's trace shows a dash, not a zero.
    con = Console(width=100, record=True)
    con.print(summary_table([{**runs[0], "xs_requests_per_cold_start": None}]))
    row = next(ln for ln in con.export_text().splitlines() if ln.startswith("│stock"))
    assert row.rstrip(" │").endswith("-")


def test_xenstored_requests_are_counted_over_the_replay_per_cold_start() -> None:
    from pyxen.lab.dom0.autoscale import xs_request_fields

    def line(op: str, args: str, kind: str = "IN") -> str:
        return f"io: {kind} 0x55d0 (d0) 20261122 08:00:00 {op} ({args} )\n"
    text = (line("READ", "/a") * 300 + line("WRITE", "/a 1") * 90 + line("WATCH", "/ t") * 10
            + line("READ", "1", "OUT")
            + line("WATCH_EVENT", "/a xs-cache:", "OUT") * 7 + line("WATCH_EVENT", "/a t", "OUT"))
    f = xs_request_fields(text, 4)
    assert f["xs_requests"] == 400 and f["xs_requests_per_cold_start"] == 100
    assert list(f["xs_requests_by_op"]) == ["READ", "WRITE", "WATCH"]
    assert f["xs_watch_events"] == {"cache": 7, "other": 1}
    assert xs_request_fields(text, 0)["xs_requests_per_cold_start"] is None
    assert xs_request_fields(None, 4) == {"xs_requests": None, "xs_requests_by_op": None,
                                          "xs_requests_per_cold_start": None,
                                          "xs_watch_events": None}


def test_the_autoscale_command_checks_its_options_before_any_build(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli.hostdeps, "check", lambda: pytest.fail("checked hosts deps"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["autoscale", "--speedup", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--speedup: must be a number > 0" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("app,func,end_timestamp,duration\na,f,1,x\n")
    with pytest.raises(SystemExit):
        cli.main(["autoscale", "--trace", str(bad), "--out", str(tmp_path)])
    assert "bad.csv:2: duration 'x' is not a number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["autoscale", "--variants", "stock,,patched", "--out", str(tmp_path)])
    assert "an empty variant name in 'stock,,patched'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["autoscale", "--speedup", "1e-306", "--out", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.endswith("raise --speedup") and len(err) < 250


def fake_xen(monkeypatch: pytest.MonkeyPatch, cpus: int) -> None:
    """libxenctrl and libxenstore handles of a host with ``cpus`` pCPUs and
    dom0 alone; no scrub to wait for; xenstored with 10 descriptors open."""
    import pyxen.xenctrl
    import pyxen.xenstore

    class Handle:
        def __enter__(self) -> Handle:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def physinfo(self) -> Any:
            return type("P", (), {"nr_cpus": cpus})()

        def directory(self, path: str) -> list[str]:
            return ["0"]

    monkeypatch.setattr(pyxen.xenctrl, "XenCtrl", Handle)
    monkeypatch.setattr(pyxen.xenstore, "XenStore", Handle)
    monkeypatch.setattr(autoscale, "settle_scrub", lambda timeout: {"waited_s": 0.0})
    monkeypatch.setattr(autoscale.tenants, "xenstored_fds", lambda: 10)


def test_a_loaded_run_sets_up_its_load_replays_and_takes_it_down(
        logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_xen(monkeypatch, cpus=2)
    driver = ConsoleDriver(logs)
    req = AutoscaleRequest(KERNEL, (0, 0), (0.0, 0.1), (0.05, 0.05), keep_alive_s=0.2,
                           memory_mib=16, running=2, spinners_per_cpu=1)
    result = autoscale.run(req, driver, tmp_path / "fresh" / "work")
    assert result["spinners"] == 2 and result["running"]["up"] == 2
    assert result["invocations_done"] == 2 and result["errors"] == []
    assert result["leftover_domains"] == [] and driver.live == set()
    assert {"fn-spin0", "fn-spin1", "fn-load-r0", "fn-load-r1"} <= set(driver.created)


def test_the_table_is_printed_whole_into_a_log_file(capsys: pytest.CaptureFixture[str]) -> None:
    from pyxen.lab.host.progress import print_table
    print_table(summary_table([_run("stock", 2.0, 8.0), _run("patched+cache", 0.5, 1.0)]))
    out = capsys.readouterr().out
    assert "patched+cache" in out and "wait>1s" in out and "…" not in out


def test_a_run_without_stock_compares_with_its_first_variant_and_fits_whole() -> None:
    """A loaded run's figures (four-digit seconds, hundreds of requests per
    cold start) print whole in 100 columns; without stock the ratios are to
    the first variant."""
    slow = {**_run("patched+cache", 94.28, 1372.61), "waited_over_1s": 171,
            "peak_instances": 168, "creates_failed": 12}
    slow["invocation_latency_s"] = {**slow["invocation_latency_s"], "p99": 1312.73}
    runs = [_run("patched", 60.36, 107.26), slow]
    assert ratios(runs)["patched+cache"]["cold_p50"] is None    # bench.json: to stock only
    con = Console(width=100, record=True)
    con.print(summary_table(runs))
    text = con.export_text()
    assert "ratio to patched" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    for cell in ("patched+cache", "94.3", "1372.6", "1312.7", "1.56x", "12.80x", "171",
                 "168", "12", "4118"):
        assert cell in text, cell


def clean_result() -> dict[str, Any]:
    return {"errors": [], "leftover_domains": [], "xenstore_nodes_left": [],
            "memory_not_returned_mib": 0, "invocations_done": 5, "invocations": 5}


def test_a_clean_result_lost_nothing() -> None:
    assert what_was_lost(clean_result()) == []


@pytest.mark.parametrize("change, reason", [
    ({"errors": ["create as-f1-0: out of memory"]}, "create as-f1-0: out of memory"),
    ({"leftover_domains": ["as-f1-0"]}, "domains left: as-f1-0"),
    ({"xenstore_nodes_left": ["7"]}, "Xenstore nodes left under /local/domain: 7"),
    ({"memory_not_returned_mib": 64}, "64 MiB of free memory not returned"),
    ({"invocations_done": 4}, "4 of 5 invocations completed"),
    ({"failed_to_run": True, "invocations": None, "invocations_done": None},
     "no of the invocations completed"),
])
def test_each_kind_of_loss_is_named(change: dict[str, Any], reason: str) -> None:
    assert what_was_lost(clean_result() | change) == [reason]


# -- what raises unexpectedly: pool tasks, the run around the replay -----------------------------------------------------


class RaisingDriver(ConsoleDriver):
    """A ConsoleDriver whose create or destroy of the names given raise
    an exception that is neither XenError nor LabError."""

    def __init__(self, logs: Path, create_raises: set[str] = frozenset(),
                 destroy_raises: set[str] = frozenset()) -> None:
        super().__init__(logs)
        self.create_raises, self.destroy_raises = create_raises, destroy_raises

    def create(self, config: DomainConfig, config_file: Path) -> None:
        if config.name in self.create_raises:
            raise subprocess.TimeoutExpired(["xl", "create"], 300)
        super().create(config, config_file)

    def destroy(self, name: str) -> None:
        if name in self.destroy_raises:
            self.destroy_raises = self.destroy_raises - {name}   # once
            raise OSError(f"destroy {name} broke")
        super().destroy(name)


def replay_within(req: AutoscaleRequest, driver: ConsoleDriver, workdir: Path,
                  timeout: float = 10.0) -> autoscale.Replay:
    """The replay, in a thread so that a hang fails the test."""
    out: list[autoscale.Replay] = []
    t = threading.Thread(target=lambda: out.append(autoscale.replay(req, driver, workdir)),
                         daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"the replay still runs after {timeout} s"
    return out[0]


def test_a_create_that_raises_anything_fails_its_instance(logs: Path,
                                                          tmp_path: Path) -> None:
    driver = RaisingDriver(logs, create_raises={"fn-1"})
    req = request([0, 1], [0.0, 0.0], [0.05, 0.05], keep_alive=0.1)
    r = replay_within(req, driver, tmp_path / "w")
    summary = autoscale.summarise(r)
    assert summary["creates_failed"] == 1
    assert any("fn-1" in e and "TimeoutExpired" in e for e in summary["errors"])
    assert summary["invocations_failed"] == 1 and summary["invocations_done"] == 1
    assert driver.created.count("fn-1") == 0 and driver.live == set()


def test_a_destroy_that_raises_anything_is_a_failed_destroy(logs: Path,
                                                            tmp_path: Path) -> None:
    driver = RaisingDriver(logs, destroy_raises={"fn-0"})
    req = request([0], [0.0], [0.05], keep_alive=0.1)
    r = replay_within(req, driver, tmp_path / "w")
    summary = autoscale.summarise(r)
    assert summary["destroys_failed"] == 1
    assert any("destroy fn-0" in e and "OSError" in e for e in summary["errors"])


# -- autoscale: the run around the replay ---------------------------------------


@pytest.fixture
def no_xen(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_xen(monkeypatch, cpus=1)
    monkeypatch.setattr(autoscale, "VANISH_WAIT_S", 0.5)


def test_a_replay_that_raises_is_an_error_and_its_guests_are_destroyed(
        logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_xen: None) -> None:
    def broken_replay(req: AutoscaleRequest, driver: ConsoleDriver, workdir: Path,
                      r: autoscale.Replay | None = None) -> autoscale.Replay:
        # An instance up, then the replay breaks.
        driver.create(DomainConfig("fn-0", KERNEL, memory_mib=16), workdir / "fn-0.cfg")
        raise RuntimeError("the scaler broke")

    monkeypatch.setattr(autoscale, "replay", broken_replay)
    driver = ConsoleDriver(logs)
    req = AutoscaleRequest(KERNEL, (0, 0), (0.0, 0.1), (0.05, 0.05), keep_alive_s=0.2,
                           memory_mib=16, running=1, spinners_per_cpu=1)
    result = autoscale.run(req, driver, tmp_path / "work")
    assert result["errors"][0] == "run failed: RuntimeError: the scaler broke"
    assert driver.live == set()                     # tenants, spinner and instance
    assert result["leftover_domains"] == ["fn-0"]
    assert result["invocations"] == 2 and result["invocations_done"] == 0
    json.dumps(result)


def test_a_clean_up_step_that_raises_does_not_stop_the_others(
        logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_xen: None) -> None:
    """The tenants' stop raising (a listing that fails) after the replay
    broke: the replay's instances are still destroyed, the run's own error
    stays first, and a result is returned."""
    def broken_replay(req: AutoscaleRequest, driver: ConsoleDriver, workdir: Path,
                      r: autoscale.Replay | None = None) -> autoscale.Replay:
        driver.create(DomainConfig("fn-0", KERNEL, memory_mib=16), workdir / "fn-0.cfg")
        raise RuntimeError("the scaler broke")

    def stop(*args: Any, **kwargs: Any) -> Any:
        raise OSError("xenstored went away")

    monkeypatch.setattr(autoscale, "replay", broken_replay)
    monkeypatch.setattr(autoscale.tenants, "stop", stop)
    driver = ConsoleDriver(logs)
    req = AutoscaleRequest(KERNEL, (0,), (0.0,), (0.05,), memory_mib=16)
    result = autoscale.run(req, driver, tmp_path / "work")
    assert result["errors"][0] == "run failed: RuntimeError: the scaler broke"
    assert "stop the tenants: OSError: xenstored went away" in result["errors"]
    assert "fn-0" not in driver.live and result["leftover_domains"] == ["fn-0"]


def test_tenants_that_fail_to_start_are_an_error_of_the_result(
        logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_xen: None) -> None:
    def start(*args: Any, **kwargs: Any) -> Any:
        raise LabError("no memory for the running guests")

    monkeypatch.setattr(autoscale.tenants, "start", start)
    driver = ConsoleDriver(logs)
    req = AutoscaleRequest(KERNEL, (0,), (0.0,), (0.05,), memory_mib=16, running=1)
    result = autoscale.run(req, driver, tmp_path / "work")
    assert result["errors"] == ["run failed: LabError: no memory for the running guests"]
    assert result["invocations"] == 1 and result["leftover_domains"] == []


def test_main_writes_the_result_of_a_run_that_raised(
        logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_xen: None) -> None:
    def broken_replay(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("instance 7")

    monkeypatch.setattr(autoscale, "replay", broken_replay)
    monkeypatch.setitem(autoscale.DRIVERS, "xl", lambda: ConsoleDriver(logs))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv(protocol.ENV_OUT, str(out))
    monkeypatch.setattr(autoscale, "SCRATCH_DIR", tmp_path / "scratch")
    req = AutoscaleRequest(KERNEL, (0,), (0.0,), (0.05,), memory_mib=16, driver="xl")
    assert autoscale.main(["--request", req.to_json()]) == 1
    result = json.loads((out / "result.json").read_text())
    assert result["errors"][0] == "run failed: KeyError: 'instance 7'"
