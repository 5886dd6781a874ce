from __future__ import annotations

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.dom0.xstrace import (TraceReader, connection_of, count_requests,
                                    count_watch_events, request_args, requests_by_reach)

TRACE = """\
IN 0x55d0 20261122 08:00:00 READ (/local/domain/0/name )
OUT 0x55d0 20261122 08:00:00 READ (Domain-0 )
IN 0x55d0 20261122 08:00:00 WRITE (/local/domain/1/name tg-1 )
IN 0x55d0 20261122 08:00:00 TRANSACTION_START ( )
WATCH_EVENT 0x55d0 20261122 08:00:00 WATCH_EVENT (@introduceDomain token )
IN 0x55d0 20261122 08:00:01 READ (/local/domain/1/name )
"""


#: The same requests as Xen 4.18 and later trace them (tools/xenstored/core.c).
TRACE_422 = """\
io: IN 0x55d0 (d0) 20261122 08:00:00 READ (/local/domain/0/name )
io: OUT 0x55d0 (d0) 20261122 08:00:00 READ (Domain-0 )
obj: CREATE connection 0x55e0
io: IN 0x55d0 (d0) 20261122 08:00:00 WRITE (/local/domain/1/name tg-1 )
io: IN 0x55d0 (d0) 20261122 08:00:00 TRANSACTION_START ( )
io: WATCH_EVENT 0x55d0 (d0) 20261122 08:00:00 WATCH_EVENT (@introduceDomain token )
io: IN 0x55f0 (d12) 20261122 08:00:01 READ (/local/domain/1/name )
"""


def test_only_requests_are_counted_by_operation():
    for trace in (TRACE, TRACE_422):
        ops = count_requests(trace)
        assert ops == {"READ": 2, "WRITE": 1, "TRANSACTION_START": 1}


def test_reader_counts_what_was_appended_and_only_whole_lines(tmp_path):
    path = tmp_path / "trace"
    path.write_text(TRACE)
    reader = TraceReader(path)           # starts at the current end
    assert reader.take() == {}
    with path.open("a") as fh:
        fh.write("IN 0x1 20261122 08:00:02 RM (/local/domain/1 )\nIN 0x1 2026")
    assert reader.take() == {"RM": 1}
    with path.open("a") as fh:
        fh.write("1122 08:00:02 MKDIR (/x )\n")
    assert reader.take() == {"MKDIR": 1}


def test_requests_are_counted_by_connection():
    assert count_requests(TRACE_422, "0x55f0") == {"READ": 1}
    assert count_requests(TRACE_422, "0x55d0") == {"READ": 1, "WRITE": 1, "TRANSACTION_START": 1}
    assert count_requests(TRACE, "0x1") == {}


def test_the_paths_of_an_operations_requests_come_in_order():
    for trace in (TRACE, TRACE_422):
        assert request_args(trace, "READ") == ["/local/domain/0/name", "/local/domain/1/name"]
        assert request_args(trace, "WRITE") == ["/local/domain/1/name"]
        assert request_args(trace, "TRANSACTION_START") == [""]
        assert request_args(trace, "RM") == []


def test_a_client_finds_its_connection_by_a_request_only_it_sent():
    assert connection_of(TRACE_422, "READ", "/local/domain/0/name") == "0x55d0"
    assert connection_of(TRACE, "WRITE", "/local/domain/1/name") == "0x55d0"
    # The reply (OUT) and the event lines are not requests.
    with pytest.raises(LabError, match="0 connections sending READ Domain-0"):
        connection_of(TRACE_422, "READ", "Domain-0")
    # Sent by two connections: ambiguous, not the first one found.
    both = TRACE_422 + "io: IN 0x5600 (d0) 20261122 08:00:02 READ (/local/domain/1/name )\n"
    with pytest.raises(LabError, match="2 connections"):
        connection_of(both, "READ", "/local/domain/1/name")


def test_watch_events_sent_are_counted_apart_for_the_library_cache():
    trace = TRACE_422 + (
        "io: OUT 0x55d0 (d0) 20261122 08:00:03 WATCH_EVENT (/local/domain/1/name xs-cache: )\n"
        "io: OUT(START) 0x55d0 (d0) 20261122 08:00:03 WATCH_EVENT (/a xs-cache: )\n"
        "io: OUT(END) 0x55d0 (d0) 20261122 08:00:03 WATCH_EVENT (/a xs-cache: )\n"
        "io: OUT 0x55e0 (d0) 20261122 08:00:03 WATCH_EVENT (/local/domain/1/state 3/vbd )\n"
        "io: OUT 0x55e0 (d0) 20261122 08:00:03 READ (xs-cache: )\n")
    # The IN-side "WATCH_EVENT" line of the sample is no event sent; a part
    # written first (START) is counted once, with its end.
    assert count_watch_events(trace) == {"cache": 2, "other": 1}
    assert count_requests(trace) == {"READ": 2, "WRITE": 1, "TRANSACTION_START": 1}


REACH_TRACE = """\
io: IN 0xa (d0) 20261205 08:00:00 READ (/local/domain/1/name )
io: IN 0xa (d0) 20261205 08:00:00 READ (domid )
io: IN 0xa (d0) 20261205 08:00:00 TRANSACTION_START ( )
io: IN 0xb (d0) 20261205 08:00:00 READ (/local/domain/1/console/ring-ref )
io: OUT 0xa (d0) 20261205 08:00:00 TRANSACTION_START (7 )
io: IN 0xa (d0) 20261205 08:00:00 READ (/local/domain/1/vm )
io: IN 0xa (d0) 20261205 08:00:00 WRITE (/local/domain/1/name tg-1 )
io: IN 0xa (d0) 20261205 08:00:00 GET_DOMAIN_PATH (1 )
io: IN 0xa (d0) 20261205 08:00:01 TRANSACTION_END (T )
io: IN 0xa (d0) 20261205 08:00:01 DIRECTORY (/local/domain )
io: IN 0xa (d0) 20261205 08:00:01 WRITE (/local/domain/1/tty x )
io: IN 0xb (d0) 20261205 08:00:01 TRANSACTION_END (F )
io: IN 0xb (d0) 20261205 08:00:01 DIRECTORY (/local/domain/1/console )
"""


def test_requests_are_classed_by_what_a_cache_in_their_client_could_answer() -> None:
    busiest, other = requests_by_reach(REACH_TRACE)
    # 0xa: the absolute READ and DIRECTORY outside its transaction and the
    # domain path (even inside it) are cacheable; the relative READ, the
    # start and the write after the end are not; inside: a read, a write
    # and the end.  Another connection's transaction changes nothing.
    assert busiest == {"cacheable": 3, "in_transaction": 3, "other": 3}
    # 0xb: a stray end (no transaction open) opens nothing and is "other".
    assert other == {"cacheable": 2, "in_transaction": 0, "other": 1}
    assert requests_by_reach(REACH_TRACE.replace("io: ", "").replace("(d0) ", "")) == [
        busiest, other]
    assert requests_by_reach("") == []
