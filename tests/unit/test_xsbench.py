"""The Xenstore latency benchmark's host side without a VM: the summary of
the dom0 driver's points (medians over rounds, growth with idle connections,
ratio to stock), its table, and the command line's checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from pyxen.lab.contract.strace import syscall_counts
from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import cli, each_variant, xsbench
from pyxen.lab.host.variants import RunVariant
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xsbench import XsParams, summarise, summary_table


def point(rnd: int, idle: int, us: float, cpu: float) -> dict[str, Any]:
    return {"round": rnd, "idle": idle, "us_median": us, "us_mean": us, "us_p90": us,
            "xenstored_cpu_us_per_read": cpu, "xenstored_fds": 10 + idle, "wrong_values": 0}


def run(variant: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    return {"variant": variant, "points": points, "errors": []}


RUNS = [
    run("stock", [point(0, 0, 100, 40), point(0, 512, 300, 200),
                  point(1, 512, 320, 220), point(1, 0, 110, 44),
                  point(2, 0, 90, 36), point(2, 512, 280, 180)]),
    run("patched", [point(0, 0, 100, 40), point(0, 512, 105, 42),
                    point(1, 512, 110, 41), point(1, 0, 98, 40),
                    point(2, 0, 102, 40), point(2, 512, 100, 43)]),
]


def test_each_count_is_the_median_of_its_rounds_with_its_ratios() -> None:
    rows = {(r.variant, r.idle): r for r in summarise(RUNS)}
    stock0, stock512 = rows["stock", 0], rows["stock", 512]
    assert (stock0.read_us, stock512.read_us) == (100, 300)
    assert sorted(stock512.read_us_all) == [280, 300, 320]
    # Growth is taken within each round (3.0, 2.91, 3.11), then the median.
    assert stock0.growth == 1.0 and stock512.growth == 3.0
    assert stock512.xenstored_us == 200 and stock512.cpu_growth == 5.0
    assert stock0.vs_stock is None and stock512.vs_stock is None
    patched512 = rows["patched", 512]
    assert patched512.read_us == 105 and patched512.growth == 1.05   # 1.05, 1.12, 0.98
    assert patched512.vs_stock == pytest.approx(105 / 300, abs=1e-3)
    # Rows: variants in run order, counts ascending.
    assert [(r.variant, r.idle) for r in summarise(RUNS)] == [
        ("stock", 0), ("stock", 512), ("patched", 0), ("patched", 512)]


def test_growth_is_taken_within_each_round_so_drift_cancels() -> None:
    # Per round 3x, 1.1x and 2x: the median is 2x, where the ratio of the
    # medians (300 / 110) would say 2.7x.
    drift = [run("stock", [point(0, 0, 100, 10), point(0, 512, 300, 30),
                           point(1, 512, 330, 33), point(1, 0, 300, 30),
                           point(2, 0, 110, 11), point(2, 512, 220, 22)])]
    rows = summarise(drift)
    assert (rows[0].read_us, rows[1].read_us) == (110, 300)
    assert rows[1].growth == 2.0 and rows[1].cpu_growth == 2.0


def test_without_stock_there_is_no_ratio_to_it() -> None:
    rows = summarise(RUNS[1:])
    assert [r.vs_stock for r in rows] == [None, None]
    assert rows[0].growth == 1.0


def test_the_table_fits_100_columns_and_names_every_variant() -> None:
    con = Console(width=100, record=True)
    con.print(summary_table(summarise(RUNS)))
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "stock" in text and "patched" in text and "0.35x" in text and "…" not in text


@pytest.mark.parametrize("argv,message", [
    (["--idle", "0,0"], "value listed twice"),
    (["--idle", "-1"], "must be >= 0"),
    (["--idle", "901"], "--idle must be one or more distinct counts"),
    (["--reads", "5"], "--reads must be >= 10"),
    (["--syscall-reads", "5"], "--syscall-reads must be 0 or >= 10"),
    (["--writes", "5"], "--writes must be 0 or >= 10"),
    (["--variants", "stock,patched+libcache"], "drop patched+libcache"),
])
def test_bad_options_fail_before_any_build(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["xsbench", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_request_carries_the_parameters() -> None:
    req = XsParams(idle=(0, 8), reads=50, rounds=2).request()
    assert (req.idle, req.reads, req.rounds) == ((0, 8), 50, 2)


STRACE_C = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 41.03    0.001234           4       300           poll
 30.00    0.000900           1       600           read
 20.00    0.000600           1       600         2 sendto
  8.97    0.000270           0       300           epoll_wait
  0.00    0.000000           0         1         1 restart_syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.003004           1      1801         3 total
"""


def test_strace_summaries_give_calls_by_name_without_the_total() -> None:
    assert syscall_counts("strace: Process 152 attached\n" + STRACE_C) == {
        "poll": 300, "read": 600, "sendto": 600, "epoll_wait": 300, "restart_syscall": 1}


@pytest.mark.parametrize("text,message", [
    ("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n",
     "no strace -c summary"),
    (STRACE_C.replace("       300           poll", "       many          poll"),
     "unexpected strace -c line"),
])
def test_what_is_not_a_summary_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        syscall_counts(text)


def test_syscalls_per_read_join_their_count_s_row() -> None:
    runs = [dict(RUNS[0], syscalls=[{"idle": 0, "reads": 300, "total_per_read": 10.0,
                                     "per_read": {}},
                                    {"idle": 512, "reads": 300, "total_per_read": 10.0,
                                     "per_read": {}}]),
            RUNS[1]]
    rows = {(r.variant, r.idle): r.syscalls for r in summarise(runs)}
    assert rows == {("stock", 0): 10.0, ("stock", 512): 10.0,
                    ("patched", 0): None, ("patched", 512): None}


def test_each_request_s_cost_to_each_server_gets_a_row() -> None:
    """A +cache run: reads answered by the proxy, misses and writes through both."""
    def fig(us: float, xs_us: float, proxy_us: float) -> dict[str, Any]:
        return {"us_median": us, "xenstored_cpu_us_per_read": xs_us,
                "proxy_cpu_us_per_read": proxy_us, "proxy_hits": 0, "proxy_forwarded": 100}

    def proxied(rnd: int, us: float, proxy_us: float, write_us: float) -> dict[str, Any]:
        return {**point(rnd, 0, us, 0.0), "proxy_cpu_us_per_read": proxy_us,
                "proxy_hits": 100, "proxy_forwarded": 0,
                "miss": fig(us * 2, 40.0, 90.0), "write": fig(write_us, 50.0, 95.0)}

    def calls(xs: float, proxy: float) -> dict[str, Any]:
        return {"reads": 300, "total_per_read": xs, "per_read": {},
                "proxy": {"total_per_read": proxy, "per_read": {}}}

    count = {"idle": 0, **calls(0.0, 4.0), "miss": calls(4.0, 6.0), "write": calls(6.0, 8.25)}
    runs = [RUNS[1], run("patched+cache", [proxied(0, 150, 80, 900), proxied(1, 170, 60, 700),
                                           proxied(2, 160, 70, 800)])]
    runs[1]["syscalls"] = [count]
    # The first table is unchanged by the proxy's figures.
    rows = {(r.variant, r.idle): r for r in summarise(runs)}
    assert (rows["patched+cache", 0].read_us, rows["patched+cache", 0].syscalls) == (160, 0.0)
    by = {(r.variant, r.idle, r.request): r for r in xsbench.request_rows(runs)}
    assert [k for k in by if k[0] == "patched+cache"] == [
        ("patched+cache", 0, "read"), ("patched+cache", 0, "miss"),
        ("patched+cache", 0, "write")]
    read, miss, write = (by["patched+cache", 0, k] for k in ("read", "miss", "write"))
    assert (read.us, read.proxy_us, read.syscalls, read.proxy_syscalls) == (160, 70, 0.0, 4.0)
    assert (miss.us, miss.xenstored_us, miss.syscalls, miss.proxy_syscalls) == (320, 40, 4.0, 6.0)
    assert (write.us, write.proxy_us, write.proxy_syscalls) == (800, 95.0, 8.25)
    # A run without the proxy: its reads only, no proxy figures.
    plain = by["patched", 0, "read"]
    assert (plain.proxy_us, plain.proxy_syscalls) == (None, None)
    assert ("patched", 0, "miss") not in by
    con = Console(width=100, record=True)
    con.print(xsbench.request_table(list(by.values())))
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "patched+cache" in text and "8.25" in text and "…" not in text
    # Without misses, writes or a proxy there is no second table.
    assert xsbench.request_rows(RUNS) == []


class _Dom0:
    """Stands in for a booted VM: the driver's result comes from run_latency."""

    booted: list[tuple[str, bool]] = []

    def __init__(self, staged: Any, options: Any) -> None:
        self.name = staged.variant.name
        self.variant = self.name + ("+cache" if options.xs_cache else "")
        self.booted.append((self.name, options.xs_cache))

    def __enter__(self) -> "_Dom0":
        if self.name == "broken":
            raise LabError("dom0 did not come up within 600 s")
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_failed_variant_keeps_the_others_results_and_then_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = {"stock": {"points": RUNS[0]["points"], "syscalls": [], "errors": []},
               "patched": {"points": [], "syscalls": [], "errors": ["read returned ENOENT"]},
               "patched+cache": {"points": RUNS[1]["points"], "syscalls": [], "errors": []}}
    monkeypatch.setattr(each_variant, "Dom0", _Dom0)
    monkeypatch.setattr(_Dom0, "booted", [])
    monkeypatch.setattr(xsbench, "run_latency",
                        lambda dom0, request: results[dom0.variant])
    monkeypatch.setattr(each_variant, "describe_build", lambda staged: {"xen": "4.22.0"})

    def boot(name: str) -> tuple[RunVariant, Any]:
        # "broken" is no variant a user could name: built here as it is.
        v = RunVariant("broken") if name == "broken" else RunVariant.parse(name)
        return v, SimpleNamespace(variant=SimpleNamespace(name=v.build))

    with pytest.raises(LabError) as err:
        xsbench.run_xs_bench([boot(n) for n in ("stock", "patched", "broken",
                                                "patched+cache")],
                             XsParams(idle=(0, 512), reads=10, rounds=3, syscall_reads=0),
                             VMOptions(), tmp_path)
    assert "patched: read returned ENOENT" in str(err.value)
    assert "broken: dom0 did not come up" in str(err.value)
    assert "stock" not in str(err.value).split(" (every run")[0]
    # The +cache variant booted its build with the proxy, under its own name.
    assert _Dom0.booted == [("stock", False), ("patched", False), ("broken", False),
                            ("patched", True)]
    doc = json.loads((tmp_path / "xsbench.json").read_text())
    assert [(r["variant"], r["errors"]) for r in doc["runs"]] == [
        ("stock", []), ("patched", ["read returned ENOENT"]),
        ("broken", ["dom0 did not come up within 600 s"]), ("patched+cache", [])]
    assert {(s["variant"], s["idle"]) for s in doc["summary"]} == {
        ("stock", 0), ("stock", 512), ("patched+cache", 0), ("patched+cache", 512)}
