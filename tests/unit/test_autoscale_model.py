"""The autoscaling benchmark's pure parts: reading and transforming a
function-invocation trace, and the scaler's decisions, driven by a
discrete-event simulation against the rules it must keep."""

from __future__ import annotations

import dataclasses
import heapq
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyxen.lab.contract.faastrace import TraceError, Transform, decode_trace, parse_trace
from pyxen.lab.dom0.autoscaler import (Autoscaler, Create, Destroy, Fail, Run, ScalerError,
                                       State)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "traces" / "azure2021-sample-200.csv"
HEADER = "app,func,end_timestamp,duration\n"


def test_the_shipped_sample_reads_whole() -> None:
    trace = parse_trace(SAMPLE.read_text(), SAMPLE.name)
    assert len(trace.invocations) == 199 and len(trace.functions) == 31
    assert [i.start_s for i in trace.invocations] == sorted(i.start_s for i in trace.invocations)
    assert 1250 < trace.span_s < 1270


@pytest.mark.parametrize("text,message", [
    ("", "empty, expected a header"),
    ("app,func,end\n", "lacks end_timestamp, duration"),
    (HEADER, "no invocations"),
    (HEADER + "a,f,10,2\na,f,x,1\n", r"t.csv:3: end_timestamp 'x' is not a number"),
    (HEADER + "a,f,10,-1\n", r"t.csv:2: duration '-1' must be a finite number >= 0"),
    (HEADER + "a,f,nan,1\n", "must be a finite number"),
    (HEADER + "a,f,1,5\n", "t.csv:2: duration 5.0 is longer than end_timestamp 1.0"),
    (HEADER + "a,f,1\n", "t.csv:2: 3 fields, the header has 4"),
    (HEADER + ",f,1,1\n", "t.csv:2: empty app or func"),
    ("\n\n", "empty, expected a header"),
    ("\n\nfoo\n", r"^t.csv:3: header 'foo' lacks app"),    # the header's own line
    ("app,func,end_timestamp,duration,app\na,f,1,1,b\n",
     r"^t.csv:1: header names app 2 times \(columns 1, 5\)"),
])
def test_bad_traces_name_the_line(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_trace(text, "t.csv")


def test_leading_blank_lines_and_a_byte_order_mark_are_skipped() -> None:
    trace = parse_trace(HEADER + "a,f,1,1\n")
    assert parse_trace("\n\n" + HEADER + "\na,f,1,1\n") == trace
    assert parse_trace("\ufeff" + HEADER + "a,f,1,1\n") == trace
    bom_file = b"\xef\xbb\xbf" + HEADER.encode() + b"a,f,1,1\n"
    assert parse_trace(decode_trace(bom_file)) == trace
    with pytest.raises(TraceError, match=r"^t.csv:3: not UTF-8 text \(byte 0xe9"):
        decode_trace(b"\xef\xbb\xbf" + HEADER.encode() + b"a,f,1,1\nb\xe9,f,1,1\n", "t.csv")


def test_a_transform_compresses_time_and_replicates_with_offsets() -> None:
    trace = parse_trace(HEADER + "a,f,10,10\na,g,20,5\nb,f,30,1\n")
    assert trace.functions == ("a/f", "a/g", "b/f") and trace.span_s == 30
    fast = Transform(speedup=10).apply(trace)
    assert [(i.func, i.start_s, i.duration_s) for i in fast.invocations] == [
        (0, 0.0, 1.0), (1, 1.5, 0.5), (2, 2.9, 0.1)]
    wide = Transform(replicas=3, seed=4).apply(trace)
    assert len(wide.functions) == 9 and len(wide.invocations) == 9
    assert wide.functions[3:6] == ("a/f#1", "a/g#1", "b/f#1")
    assert all(0 <= i.start_s < 30 for i in wide.invocations)
    assert Transform(replicas=3, seed=4).apply(trace) == wide       # seeded
    assert Transform(replicas=3, seed=5).apply(trace) != wide
    assert Transform(speedup=2, replicas=2).describe(trace, wide)["after"]["invocations"] == 9
    for bad in (Transform(speedup=0), Transform(replicas=0)):
        with pytest.raises(ValueError):
            bad.apply(trace)


def test_a_trace_that_starts_late_is_replayed_from_its_first_start() -> None:
    # an excerpt from day 5 of a 14-day trace: not 432,000 s of waiting
    trace = parse_trace(HEADER + "a,f,432010,10\nb,g,432030,5\n")
    out = Transform(1.0, 2, 0).apply(trace)
    assert [i.start_s for i in out.invocations if i.func < 2] == [0.0, 25.0]
    assert all(0 <= i.start_s < trace.period_s for i in out.invocations)
    assert Transform().describe(trace, out)["shifted_by_s"] == -432000.0


def test_replica_0_is_the_trace_even_with_an_invocation_at_its_very_end() -> None:
    # b/g starts where the span ends: a wrap within the span put it at 0.
    trace = parse_trace(HEADER + "a,f,10,10\nb,g,20,0\n")
    assert [i.start_s for i in trace.invocations] == [0.0, 20.0]
    assert Transform(1.0, 1, 0).apply(trace) == trace
    assert trace.span_s == 20 and trace.period_s == 30     # one mean gap longer
    wide = Transform(1.0, 3, 0).apply(trace)
    for k in (1, 2):
        starts = [i.start_s for i in wide.invocations if i.func // 2 == k]
        assert len(set(starts)) == 2 and all(0 <= s < 30 for s in starts)


#: A trace in milliseconds, as the Azure trace's durations are: rows of
#: (function, end, duration <= end), and whether a last invocation of no
#: duration starts at the very end.
ms_rows = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2_000_000), st.integers(0, 10**6))
                   .map(lambda r: (r[0], r[1], min(r[1], r[2]))), min_size=1, max_size=30)


def ms_trace(rows: list[tuple[int, int, int]], zero_at_end: bool) -> str:
    if zero_at_end:
        end = max(e for _, e, _ in rows)
        rows = rows + [(5, end, 0)]
    return HEADER + "".join(f"a,f{f},{e / 1000},{d / 1000}\n" for f, e, d in rows)


@settings(max_examples=300, deadline=None)
@given(ms_rows, st.booleans(), st.integers(1, 4), st.integers(0, 2**32),
       st.sampled_from([1.0, 3.0, 0.1]))
@example([(0, 10_000, 10_000), (1, 20_000, 0)], False, 2, 0, 1.0)
@example([(0, 280, 0), (0, 282, 2)], False, 2, 0, 1.0)
def test_replica_0_is_the_trace_and_replicas_keep_its_range_and_distinct_starts(
        rows: list[tuple[int, int, int]], zero_at_end: bool, replicas: int, seed: int,
        speedup: float) -> None:
    trace = parse_trace(ms_trace(rows, zero_at_end))
    out = Transform(speedup, replicas, seed).apply(trace)
    n = len(trace.functions)
    assert out.functions[:n] == trace.functions
    first, span, period = trace.first_s, trace.span_s, trace.period_s
    assert [i for i in out.invocations if i.func < n] == [
        dataclasses.replace(i, start_s=(i.start_s - first) / speedup,
                            duration_s=i.duration_s / speedup)
        for i in trace.invocations]
    last = max(i.start_s for i in trace.invocations)
    assert period == span or last - first == pytest.approx(span, abs=1e-6) or span == 0
    # starts a float rounding apart (0.282 - 0.002 and 0.28) are one start
    distinct = len({round(i.start_s, 6) for i in trace.invocations})
    for k in range(1, replicas):
        starts = [i.start_s * speedup for i in out.invocations if i.func // n == k]
        assert len(starts) == len(trace.invocations)
        assert all(-1e-9 <= s <= period + 1e-9 for s in starts)
        # A rotation within the period: no two distinct starts made one.
        assert len({round(s, 6) for s in starts}) == distinct


# -- the scaler -------------------------------------------------------------

arrivals = st.lists(st.tuples(st.integers(0, 3), st.floats(0, 20), st.floats(0.1, 5)),
                    min_size=1, max_size=40)


def simulate(events: list[tuple[int, float, float]], keep_alive: float, start_s: float,
             failing: set[int]) -> dict[str, Any]:
    """Run the scaler as the dom0 driver does, with instances taking
    ``start_s`` to start (those numbered in ``failing`` fail to), checking
    each action against the scaler's rules as it is taken: no cold start
    while an instance of the function idles warm, no run on a busy or
    starting instance, no destroy of a busy one or before its keep-alive."""
    scaler = Autoscaler(keep_alive)
    queue: list[tuple[float, int, str, int]] = []
    seq = 0

    def at(t: float, kind: str, x: int) -> None:
        nonlocal seq
        heapq.heappush(queue, (t, seq, kind, x))
        seq += 1

    for n, (func, t, _) in enumerate(events):
        at(t, "arrive", n)
    ran: dict[int, int] = {}
    failed: set[int] = set()
    destroyed: set[int] = set()
    busy: set[int] = set()
    up: set[int] = set()
    funcs: dict[int, int] = {}

    def take(actions: list[Any], now: float) -> None:
        for a in actions:
            if isinstance(a, Create):
                warm = sorted(i for i in up - busy - destroyed if funcs[i] == a.func)
                assert not warm, f"a cold start of function {a.func} while {warm} idled warm"
                funcs[a.instance] = a.func
                at(now + start_s, "failed" if a.instance in failing else "started", a.instance)
            elif isinstance(a, Run):
                assert a.instance in up and a.instance not in busy, "ran on a busy or new one"
                assert funcs[a.instance] == events[a.invocation][0], "wrong function"
                assert a.invocation not in ran, "an invocation ran twice"
                busy.add(a.instance)
                ran[a.invocation] = a.instance
                at(now + events[a.invocation][2], "finished", a.instance)
            elif isinstance(a, Destroy):
                assert a.instance not in busy, "destroyed while busy"
                inst = scaler.instances[a.instance]
                assert now >= inst.idle_since + keep_alive or draining, \
                    "destroyed before its keep-alive"
                destroyed.add(a.instance)
            elif isinstance(a, Fail):
                failed.add(a.invocation)

    draining = False
    while queue:
        now, _, kind, x = heapq.heappop(queue)
        if kind == "arrive":
            take(scaler.arrive(x, events[x][0], now), now)
        elif kind == "started":
            up.add(x)
            take(scaler.started(x, now), now)
        elif kind == "failed":
            take(scaler.start_failed(x, now), now)
        elif kind == "finished":
            busy.discard(x)
            take(scaler.finished(x, now), now)
        take(scaler.expire(now), now)
        nxt = scaler.next_expiry()
        if nxt is not None:
            at(max(nxt, now), "tick", -1)
    draining = True
    take(scaler.drain(), float("inf"))
    return {"ran": ran, "failed": failed, "destroyed": destroyed, "scaler": scaler,
            "creates": len(funcs)}


@settings(max_examples=200, deadline=None)
@given(arrivals, st.floats(0, 10), st.floats(0.1, 3), st.sets(st.integers(0, 10)))
def test_every_invocation_runs_once_or_fails_and_nothing_is_left(
        events: list[tuple[int, float, float]], keep_alive: float, start_s: float,
        failing: set[int]) -> None:
    out = simulate(events, keep_alive, start_s, failing)
    assert set(out["ran"]) | out["failed"] == set(range(len(events)))
    assert not set(out["ran"]) & out["failed"]
    assert out["scaler"].live() == 0
    assert all(i.state is State.GONE for i in out["scaler"].instances.values())
    # A failure only where a create failed; no create more than invocations.
    assert len(out["failed"]) <= len(failing)
    assert out["creates"] <= len(events)


def test_a_warm_instance_is_reused_within_its_keep_alive_and_not_after() -> None:
    out = simulate([(0, 0.0, 1.0), (0, 5.0, 1.0), (0, 30.0, 1.0)], keep_alive=10,
                   start_s=0.5, failing=set())
    assert out["creates"] == 2                       # the third came after 10 s idle
    assert out["ran"][0] == out["ran"][1] != out["ran"][2]


def test_events_that_contradict_the_state_are_driver_bugs() -> None:
    scaler = Autoscaler(keep_alive_s=1)
    with pytest.raises(ScalerError, match="instance 0 is unknown"):
        scaler.started(0, 0.0)
    (create,) = scaler.arrive(0, func=2, now=0.0)
    assert create == Create(0, 2)
    with pytest.raises(ScalerError, match="instance 0 is starting, expected busy"):
        scaler.finished(0, 1.0)


def test_a_field_the_csv_module_refuses_is_named_with_its_line() -> None:
    text = "app,func,end_timestamp,duration\na,f,1,0.5\na," + "f" * 200_000 + ",2,1\n"
    with pytest.raises(TraceError, match=r"^big.csv:3: not a CSV row: field larger"):
        parse_trace(text, "big.csv")


def test_a_trace_that_is_not_utf8_is_named_with_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pyxen.lab.host import cli
    trace = tmp_path / "latin.csv"
    trace.write_bytes(b"app,func,end_timestamp,duration\nb\xe9,f,1,0.5\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["autoscale", "--trace", str(trace), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert f"error: {trace}:2: not UTF-8 text (byte 0xe9" in capsys.readouterr().err
