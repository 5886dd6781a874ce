from __future__ import annotations

from pyxen.lab.xstrace import TraceReader, count_requests

TRACE = """\
IN 0x55d0 20261122 08:00:00 READ (/local/domain/0/name )
OUT 0x55d0 20261122 08:00:00 READ (Domain-0 )
IN 0x55d0 20261122 08:00:00 WRITE (/local/domain/1/name tg-1 )
IN 0x55d0 20261122 08:00:00 TRANSACTION_START ( )
WATCH_EVENT 0x55d0 20261122 08:00:00 WATCH_EVENT (@introduceDomain token )
IN 0x55d0 20261122 08:00:01 READ (/local/domain/1/name )
"""


def test_only_requests_are_counted_by_operation():
    ops = count_requests(TRACE)
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
