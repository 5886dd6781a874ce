from __future__ import annotations

from pyxen.lab.dom0.xstrace import TraceReader, count_requests

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
