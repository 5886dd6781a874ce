"""The birth-after-death benchmark's pure parts (no Xen)."""

from __future__ import annotations

import pytest

from pyxen.lab.scrub_dom0 import unscrubbed_by_node
from pyxen.lab.scrubbench import ratios

DUMP = """(XEN) 'H' pressed -> dumping heap info (now = 82456171745)
(XEN) heap[node=0][zone=0] -> 0 pages
(XEN) heap[node=1][zone=40] -> 0 pages
(XEN) Node 1 has 34755 unscrubbed pages
"""


def test_heap_dump_gives_dirty_pages_per_node() -> None:
    assert unscrubbed_by_node(DUMP) == {1: 34755}
    assert unscrubbed_by_node("(XEN) heap[node=0][zone=0] -> 5 pages\n") == {}


def run(variant: str, create: float, destroy: float, spin: float | None) -> dict:  # type: ignore[type-arg]
    return {"variant": variant, "gaps": [
        {"gap_s": 0.0, "create_s": create, "destroy_s": destroy,
         "spin_cpus_busy_during_gap": None},
        {"gap_s": 2.0, "create_s": create, "destroy_s": destroy,
         "spin_cpus_busy_during_gap": spin}]}


def test_ratios_are_against_stock_per_gap() -> None:
    out = ratios([run("stock", 4.0, 2.0, 3.0), run("patched", 2.0, 2.2, 2.7)])
    assert [r["gap_s"] for r in out] == [0.0, 2.0]
    assert out[1]["create_vs_stock"] == pytest.approx(0.5)
    assert out[1]["destroy_vs_stock"] == pytest.approx(1.1)
    assert out[1]["spin_throughput_vs_stock"] == pytest.approx(0.9)
    assert out[0]["spin_throughput_vs_stock"] is None  # no gap, no throughput


def test_no_ratios_without_stock() -> None:
    assert ratios([run("patched", 2.0, 2.0, 1.0)]) == []
