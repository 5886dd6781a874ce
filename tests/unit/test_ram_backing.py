"""How much of QEMU's memory the host backs with huge pages: the parser
of smaps_rollup and the reader's warning, without QEMU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pyxen.lab.host.ram_backing import parse_smaps_rollup, read_backing

ROLLUP = """55d0a0000000-7ffd4b1f2000 ---p 00000000 00:00 0                          [rollup]
Rss:            15723432 kB
Pss:            15722001 kB
Anonymous:      15700000 kB
AnonHugePages:  {huge} kB
Swap:                  0 kB
"""


def test_the_rollup_gives_resident_and_huge_memory() -> None:
    b = parse_smaps_rollup(ROLLUP.format(huge=15634432))
    assert b == {"rss_mib": 15354.9, "huge_mib": 15268.0, "huge_fraction": 0.9943}


@pytest.mark.parametrize("text, message", [
    ("Rss: 10 kB\n", "no AnonHugePages line"),
    ("AnonHugePages: 0 kB\n", "no Rss line"),
    ("Rss: 10 MB\nAnonHugePages: 0 kB\n", "'Rss: 10 MB' is not a size in kB"),
    ("Rss: ten kB\nAnonHugePages: 0 kB\n", "is not a size in kB"),
])
def test_a_rollup_without_its_sizes_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_smaps_rollup(text)


def test_a_boot_with_few_huge_pages_is_called_out(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "smaps_rollup").write_text(ROLLUP.format(huge=15634432))
    with caplog.at_level(logging.WARNING):
        assert read_backing(42, None, tmp_path)["huge_fraction"] > 0.99  # type: ignore[index]
    assert caplog.records == []
    (tmp_path / "42" / "smaps_rollup").write_text(ROLLUP.format(huge=4000000))
    with caplog.at_level(logging.WARNING):
        assert read_backing(42, None, tmp_path)["huge_fraction"] == 0.2544  # type: ignore[index]
    assert "25% in huge pages" in caplog.text and "compare its timings" in caplog.text
    caplog.clear()
    # Judged against the guest's RAM where QEMU holds more (its own memory).
    with caplog.at_level(logging.WARNING):
        assert read_backing(42, 4096, tmp_path) is not None
    assert caplog.records == []
    with caplog.at_level(logging.WARNING):
        assert read_backing(43, None, tmp_path) is None          # QEMU gone
    assert "cannot tell how QEMU 43's memory is backed" in caplog.text
    (tmp_path / "42" / "smaps_rollup").write_text("")
    assert read_backing(42, None, tmp_path) is None              # not what it should be
