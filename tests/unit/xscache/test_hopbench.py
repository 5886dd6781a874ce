"""The native hop measurement: the break-even formula, the projection's
labels, the result's JSON, the CLI's arguments, and short end-to-end runs
that check the proxy's counters (never the timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenstore_cache import cli, hopbench
from xenstore_cache.hopbench import (
    PROJECTION,
    REFERENCE_LATENCIES_US,
    Counts,
    HopResult,
    Latency,
    break_even_latency_us,
    format_table,
    project,
    saving_per_request_us,
)

# -- the formula --------------------------------------------------------------


@pytest.mark.parametrize("h, hit, hop, expect", [
    (0.25, 100.0, 50.0, 250.0),         # 100 + 3 * 50
    (0.5, 10.0, 20.0, 30.0),            # 10 + 1 * 20
    (0.2, 0.0, 10.0, 40.0),             # 0 + 4 * 10
    (1.0, 42.0, 1000.0, 42.0),          # nothing forwarded: a hit against L
    (0.25, 100.0, 0.0, 100.0),          # a free hop: pays once a hit beats L
])
def test_break_even_by_hand(h: float, hit: float, hop: float, expect: float) -> None:
    assert break_even_latency_us(h, hit, hop) == pytest.approx(expect)


@pytest.mark.parametrize("h, match", [
    (0.0, "never pays"), (-0.1, "never pays"), (1.5, "between 0 and 1"),
    (math.nan, "between 0 and 1"), (math.inf, "between 0 and 1"),
])
def test_break_even_refuses_hit_fractions_without_one(h: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        break_even_latency_us(h, 10.0, 10.0)


def test_break_even_refuses_nonsense_latencies() -> None:
    with pytest.raises(ValueError, match="hit latency"):
        break_even_latency_us(0.5, -1.0, 10.0)
    with pytest.raises(ValueError, match="hop cost"):
        break_even_latency_us(0.5, 1.0, math.inf)
    with pytest.raises(ValueError, match="xenstored latency"):
        saving_per_request_us(0.5, -3.0, 1.0, 1.0)


def test_saving_by_hand() -> None:
    # At the break-even the proxy neither saves nor costs.
    assert saving_per_request_us(0.25, 250.0, 100.0, 50.0) == pytest.approx(0.0)
    # 0.25 * (758 - 100) - 0.75 * 50
    assert saving_per_request_us(0.25, 758.0, 100.0, 50.0) == pytest.approx(127.0)
    # No hits: every request pays the hop.
    assert saving_per_request_us(0.0, 500.0, 100.0, 50.0) == pytest.approx(-50.0)
    # All hits: L - T_hit.
    assert saving_per_request_us(1.0, 93.0, 100.0, 50.0) == pytest.approx(-7.0)


fractions = st.floats(min_value=0.01, max_value=1.0)
micros = st.floats(min_value=0.0, max_value=1e4)


@given(fractions, fractions, micros, micros)
def test_break_even_falls_as_hits_rise(h1: float, h2: float, hit: float, hop: float) -> None:
    lo, hi = sorted((h1, h2))
    assert break_even_latency_us(lo, hit, hop) >= break_even_latency_us(hi, hit, hop) - 1e-9


@given(fractions, micros, micros, micros, micros)
def test_break_even_rises_with_hit_and_hop_costs(h: float, a: float, b: float,
                                                 hit: float, hop: float) -> None:
    lo, hi = sorted((a, b))
    assert break_even_latency_us(h, lo, hop) <= break_even_latency_us(h, hi, hop) + 1e-9
    assert break_even_latency_us(h, hit, lo) <= break_even_latency_us(h, hit, hi) + 1e-9
    assert break_even_latency_us(h, hit, hop) >= hit


@given(fractions, micros, micros, micros)
def test_saving_is_positive_exactly_above_the_break_even(h: float, hit: float, hop: float,
                                                         l_us: float) -> None:
    be = break_even_latency_us(h, hit, hop)
    s = saving_per_request_us(h, l_us, hit, hop)
    if l_us > be + 1e-6 * max(1.0, be):
        assert s > 0
    elif l_us < be - 1e-6 * max(1.0, be):
        assert s < 0
    # ...and grows with L at rate h.
    assert saving_per_request_us(h, l_us + 1.0, hit, hop) - s == pytest.approx(h, rel=1e-6,
                                                                                abs=1e-6)


# -- the projection -----------------------------------------------------------


def _result() -> HopResult:
    return HopResult(
        layout="processes", iterations=1000, rounds=5, warmup=100,
        direct=Latency(100.0, 150.0, 1000), hit=Latency(100.0, 140.0, 1000),
        forwarded=Latency(150.0, 260.0, 1000),
        hit_counts=Counts(1000, 0, 0), forwarded_counts=Counts(0, 1000, 1000, 1000, 0),
        host="x86_64 2 CPUs", python="3.11.7",
        loadavg_before=(4.5, 4.0, 3.5), loadavg_after=(4.6, 4.1, 3.6))


def test_projection_by_hand_and_labelled() -> None:
    r = _result()
    assert (r.t_hit_us, r.h_fwd_us) == (100.0, 50.0)
    p = project(r.t_hit_us, r.h_fwd_us)
    assert p.kind == PROJECTION and p.hit_fraction == hopbench.DEFAULT_HIT_FRACTION
    assert p.break_even_us == pytest.approx(250.0)
    assert [row.l_us for row in p.rows] == [93.0, 189.0, 429.0, 758.0]
    assert [row.pays for row in p.rows] == [False, False, True, True]
    assert p.rows[-1].saving_us == pytest.approx(127.0)
    assert all(row.kind == PROJECTION for row in p.rows)
    d = p.to_dict()
    assert d["kind"] == PROJECTION
    assert all(row["kind"] == PROJECTION for row in d["rows"])  # type: ignore[attr-defined]


def test_projection_needs_hits() -> None:
    with pytest.raises(ValueError, match="never pays"):
        project(10.0, 10.0, hit_fraction=0.0)


def test_table_marks_every_projected_line() -> None:
    r = _result()
    text = format_table(r, project(r.t_hit_us, r.h_fwd_us, hit_fraction=0.5))
    measured, projected = text.split("\n\n")
    assert "projection" not in measured
    assert [line.split()[0] for line in measured.splitlines()[2:5]] == \
        ["direct", "hit", "forwarded"]
    plines = projected.splitlines()
    header = [line for line in plines if not line.startswith("projection")]
    assert len(header) == 1 and header[0].split()[:2] == ["L", "µs"]    # the column names
    rows = [line for line in plines if "C xenstored read" in line]
    assert len(rows) == len(REFERENCE_LATENCIES_US)
    assert all(line.startswith("projection") for line in rows)
    assert "h = 0.5" in projected and "150.0 µs" in projected   # 100 + 1 * 50


# -- JSON -----------------------------------------------------------------------


def test_json_round_trip() -> None:
    r = _result()
    assert HopResult.from_json(r.to_json()) == r
    d = json.loads(r.to_json())
    assert d["derived"] == {"t_hit_us": 100.0, "h_fwd_us": 50.0}
    # The CLI's file: the result with the projection beside it.
    doc = hopbench.report(r, project(r.t_hit_us, r.h_fwd_us))
    back = json.loads(json.dumps(doc))
    assert back["projection"]["kind"] == PROJECTION
    assert HopResult.from_dict(back) == r


@pytest.mark.parametrize("text", ["[]", "{}", '{"layout": "processes"}'])
def test_json_refuses_what_is_not_a_result(text: str) -> None:
    with pytest.raises(ValueError, match="not a hopbench result"):
        HopResult.from_json(text)


@pytest.mark.parametrize("where,message", [
    ("missing/hop.json", "its directory {d}/missing does not exist"),
    ("plain/hop.json", "its directory {d}/plain is not a directory"),
    ("adir", "is a directory"),
])
def test_json_file_is_checked_before_measuring(tmp_path: Path, where: str, message: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").write_text("x")
    (tmp_path / "adir").mkdir()

    def measure(*args: object, **kwargs: object) -> HopResult:
        pytest.fail("measured for a --json file it cannot write")
    monkeypatch.setattr(hopbench, "run", measure)
    assert cli.main(["hopbench", "--json", str(tmp_path / where)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"xenstore-cache hopbench: error: --json file {tmp_path / where}")
    assert err.endswith(f" {message.format(d=tmp_path)}\n") and err.count("\n") == 1


def test_a_json_file_that_fails_to_write_keeps_the_measurement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = out_dir / "hop.json"

    def measure(*args: object, **kwargs: object) -> HopResult:
        out_dir.rmdir()             # gone while measuring: the check could not know
        return _result()
    monkeypatch.setattr(hopbench, "run", measure)
    assert cli.main(["hopbench", "--hit-fraction", "0.5", "--json", str(path)]) == 1
    out, err = capsys.readouterr()
    r = _result()
    table = format_table(r, project(r.t_hit_us, r.h_fwd_us, hit_fraction=0.5))
    assert out.startswith(table + "\n")
    doc = json.loads(out[len(table) + 1:])
    assert HopResult.from_dict(doc) == r and doc["projection"]["hit_fraction"] == 0.5
    assert err.startswith(f"xenstore-cache hopbench: error: cannot write --json file {path}: ")
    assert err.endswith("(the JSON result is on stdout instead)\n") and err.count("\n") == 1


def test_latency_percentiles() -> None:
    lat = Latency.from_ns([i * 1000 for i in range(1, 11)])     # 1..10 µs
    assert (lat.median_us, lat.p90_us, lat.samples) == (5.5, 9.0, 10)
    with pytest.raises(ValueError):
        Latency.from_ns([])


# -- arguments --------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--iterations", "0"], "argument --iterations: must be at least 1, got 0"),
    (["--iterations", "-5"], "argument --iterations: must be at least 1"),
    (["--iterations", "ten"], "argument --iterations: not an integer: 'ten'"),
    (["--hit-fraction", "0"], "argument --hit-fraction: a hit fraction must be above 0"),
    (["--hit-fraction", "1.01"], "argument --hit-fraction: a hit fraction must be above 0"),
    (["--hit-fraction", "nan"], "argument --hit-fraction: a hit fraction must be above 0"),
    (["--hit-fraction", "a lot"], "argument --hit-fraction: not a number: 'a lot'"),
    (["--layout", "vm"], "argument --layout: invalid choice: 'vm'"),
])
def test_bad_arguments_name_the_problem(argv: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["hopbench", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_default_arguments() -> None:
    a = cli.build_parser().parse_args(["hopbench"])
    assert (a.iterations, a.hit_fraction, a.json, a.layout) == \
        (hopbench.DEFAULT_ITERATIONS, 0.25, None, "processes")
    a = cli.build_parser().parse_args(["hopbench", "--iterations", "7", "--hit-fraction", "1",
                                       "--json", "out.json", "--layout", "inprocess"])
    assert (a.iterations, a.hit_fraction, a.json, a.layout) == \
        (7, 1.0, Path("out.json"), "inprocess")


def test_measure_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="iterations"):
        hopbench.run(0)
    with pytest.raises(ValueError, match="layout"):
        hopbench.run(5, layout="vm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounds"):
        hopbench.run(5, rounds=0)


# -- end to end (counters, not timings) -------------------------------------------------


def _check_counters(r: HopResult, n: int) -> None:
    assert r.hit_counts == Counts(hits=n, misses=0, forwarded=0, fills=0, fills_refused=0)
    assert r.forwarded_counts == Counts(hits=0, misses=n, forwarded=n, fills=n, fills_refused=0)
    assert r.direct.samples == r.hit.samples == r.forwarded.samples == n


def test_in_process_run_hits_and_forwards() -> None:
    r = hopbench.run(30, layout="inprocess", rounds=3, warmup=3)
    _check_counters(r, 30)


def test_cli_run_in_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default layout: model and proxy in their own processes (about a
    second, mostly their interpreters starting)."""
    out = tmp_path / "hop.json"
    assert cli.main(["hopbench", "--iterations", "20", "--hit-fraction", "0.3",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "20 hits, 0 forwarded" in text and "0 hits, 20 forwarded" in text
    doc = json.loads(out.read_text())
    r = HopResult.from_dict(doc)
    assert r.layout == "processes"
    _check_counters(r, 20)
    assert doc["projection"]["kind"] == PROJECTION
    assert doc["projection"]["hit_fraction"] == 0.3
    assert all(row["kind"] == PROJECTION for row in doc["projection"]["rows"])
