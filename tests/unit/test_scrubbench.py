"""The birth-after-death benchmark's pure parts (no Xen)."""

from __future__ import annotations

import pytest

from pyxen.lab.contract.heapdump import dma_free_by_node, dma_width, unscrubbed_by_node
from pyxen.lab.host.scrubbench import (ScrubParams, birth_scrub_cost, destroy_profile_text,
                                       pages_scrubbed_by_create, ratios, scrub_bound,
                                       summarize_gaps, summarize_sizes, workers_on_vs_off)

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


def gap_run(gap: float, create: float, cpu: float, at: int, after: int,
            spin: float | None = 3.5, counters: dict | None = None) -> dict:  # type: ignore[type-arg]
    return {"gap_s": gap, "guest_mib": 512, "create_s": create, "destroy_s": 2.0,
            "create_dom0_cpu_s": cpu, "destroy_dom0_cpu_s": 1.0,
            "spin_cpus_busy_during_gap": spin if gap else None,
            "spin_cpus_busy_during_create": 3.0,
            "dirty_pages_at_create": at, "dirty_pages_after_create": after,
            "scrub_during_create": counters}


def test_repetitions_become_a_median_per_gap_in_first_run_order() -> None:
    runs = [gap_run(2.0, 3.0, 1.0, 100, 0), gap_run(0.0, 9.0, 1.0, 100, 0),
            gap_run(2.0, 1.0, 1.0, 100, 0), gap_run(0.0, 5.0, 1.0, 100, 0),
            gap_run(2.0, 2.0, 1.0, 100, 0)]
    out = summarize_gaps(runs)
    assert [(g["gap_s"], g["n"]) for g in out] == [(2.0, 3), (0.0, 2)]
    assert out[0]["create_s"] == 2.0 and out[0]["create_s_all"] == [3.0, 1.0, 2.0]
    assert out[1]["create_s"] == 7.0
    # no throughput without a gap: None, not a median of nothing
    assert out[1]["spin_cpus_busy_during_gap"] is None
    assert out[1]["spin_cpus_busy_during_gap_all"] == []


def test_a_destroys_profile_figures_become_medians_and_words() -> None:
    runs = [gap_run(2.0, 1.0, 1.0, 0, 0) | {"destroy_heap_lock_wait_s": w,
                                            "destroy_heap_lock_held_s": 0.5,
                                            "destroy_heap_lock_blocked": b,
                                            "destroy_domctl_entries": 40,
                                            "destroy_background_scrubbed": None}
            for w, b in ((0.002, 10), (0.010, 30), (0.004, 20))]
    g = summarize_gaps(runs)[0]
    assert g["destroy_heap_lock_wait_s"] == 0.004
    assert g["destroy_heap_lock_wait_s_all"] == [0.002, 0.010, 0.004]
    assert g["destroy_heap_lock_blocked"] == 20
    assert g["destroy_background_scrubbed"] is None     # a build without the counter
    assert destroy_profile_text(g) == (
        "heap_lock wait 4.0 ms (20 waits), held 0.50 s, 40 domctl entries, "
        "? pages scrubbed in the background (medians)")
    # Without a profiling build the figures are absent: no medians of nothing.
    assert summarize_gaps([gap_run(2.0, 1.0, 1.0, 0, 0)])[0]["destroy_heap_lock_wait_s"] is None


def test_pages_a_create_scrubbed_prefer_the_counters() -> None:
    assert pages_scrubbed_by_create(gap_run(0, 1, 1, 1000, 400)) == 600
    # the worker cleaned pages while the create ran: not the create's work
    assert pages_scrubbed_by_create(
        gap_run(0, 1, 1, 1000, 0, counters={"scrubbed_alloc": 7})) == 7
    # more dirty pages after than before (a free during the create): none scrubbed
    assert pages_scrubbed_by_create(gap_run(0, 1, 1, 10, 50)) == 0
    old = gap_run(0, 1, 1, 10, 0)
    del old["dirty_pages_after_create"]
    assert pages_scrubbed_by_create(old) is None


def test_birth_scrub_cost_is_the_fit_of_create_cpu_against_pages() -> None:
    # 2 s for a clean birth, 10 us a dirty page
    runs = [gap_run(0, 1, 2.0 + 10e-6 * p, p, 0) for p in (0, 50_000, 100_000, 200_000)]
    cost = birth_scrub_cost(runs)
    assert cost is not None
    assert cost["us_per_page"] == pytest.approx(10.0)
    assert cost["clean_create_cpu_s"] == pytest.approx(2.0)


def test_scrub_bound_pools_the_variants_and_prices_stocks_pages() -> None:
    # stock's births all scrub ~100k pages (no spread of their own), patched's
    # none or some: together they give the slope
    stock = {"variant": "stock", "gap_runs": [
        gap_run(0, 1, 1.0 + 2e-6 * p, p, 0) for p in (100_000, 100_000, 100_000)]}
    patched = {"variant": "patched", "gap_runs": [
        gap_run(0, 1, 1.0 + 2e-6 * p, 9, 9, counters={"scrubbed_alloc": p})
        for p in (0, 0, 50_000)]}
    assert birth_scrub_cost(stock["gap_runs"]) is None
    bound = scrub_bound([stock, patched])
    assert bound is not None
    assert bound["us_per_page"] == pytest.approx(2.0)
    assert bound["stock_pages_scrubbed"] == 100_000
    assert bound["stock_scrub_cpu_s"] == pytest.approx(0.2)
    assert bound["best_create_ratio"] == pytest.approx(1.0 / 1.2)
    assert scrub_bound([patched]) is None           # nothing to compare with


def test_birth_scrub_cost_needs_spread() -> None:
    assert birth_scrub_cost([gap_run(0, 1, 2.0, 0, 0)] * 5) is None
    assert birth_scrub_cost([gap_run(0, 1, 2.0, 0, 0), gap_run(0, 1, 3.0, 9, 0)]) is None
    # births that scrubbed 0-2 pages (patched) give no slope, not a wild one
    assert birth_scrub_cost([gap_run(0, 1, 2.0 + i, i, 0) for i in (0, 1, 2, 0)]) is None
    # births that all scrubbed ~514k pages but one with 10k fewer: the slope
    # would be noise and the clean birth an extrapolation over 500k pages
    # (a run gave -22.8 us a page and a 12.7 s clean birth)
    clustered = [gap_run(0, 1, c, p, 0) for p, c in
                 ((514_051, 1.2), (514_060, 1.1), (504_000, 1.3), (514_040, 1.25))]
    assert birth_scrub_cost(clustered) is None


def test_ratios_use_medians_and_cpu_where_measured() -> None:
    stock = {"variant": "stock", "gaps": summarize_gaps(
        [gap_run(2.0, 4.0, 2.0, 100, 0), gap_run(2.0, 6.0, 2.0, 100, 0)])}
    patched = {"variant": "patched", "gaps": summarize_gaps(
        [gap_run(2.0, 2.5, 1.0, 0, 0), gap_run(2.0, 2.5, 1.0, 0, 0)])}
    (r,) = ratios([stock, patched])
    assert r["create_vs_stock"] == pytest.approx(0.5)
    assert r["create_cpu_vs_stock"] == pytest.approx(0.5)
    assert r["destroy_cpu_vs_stock"] == pytest.approx(1.0)



HEAP = """(XEN) 'H' pressed -> dumping heap info (now = 94421822339)
(XEN) heap[node=0][zone=15] -> 16128 pages
(XEN) heap[node=0][zone=17] -> 65536 pages
(XEN) heap[node=0][zone=18] -> 131072 pages
(XEN) heap[node=1][zone=20] -> 28088 pages
"""


def test_dma_pool_is_the_free_pages_of_zones_below_the_dma_width() -> None:
    # 29 bits: pages below 512 MiB, i.e. zones up to 17
    assert dma_free_by_node(HEAP, 29) == {0: 16128 + 65536}
    assert dma_free_by_node(HEAP, 30) == {0: 16128 + 65536 + 131072}
    assert dma_free_by_node(HEAP, 20) == {}


def test_dma_width_comes_from_xens_boot_log() -> None:
    assert dma_width("(XEN) Domain heap initialised DMA width 29 bits\n") == 29
    assert dma_width("(XEN) Domain heap initialised\n") is None


def size_run(mib: int, destroy: float, clean: float | None,
             scrub: dict | None = None) -> dict:  # type: ignore[type-arg]
    return {"guest_mib": mib, "destroy_s": destroy, "time_to_clean_s": clean,
            "dirty_pages_left": 0 if clean is not None else 1000, "scrub": scrub}


def test_size_repetitions_become_medians_per_size_in_first_run_order() -> None:
    runs = [size_run(1024, 1.0, 2.0, {"scrubbed_local": 10, "scrubbed_remote": 0}),
            size_run(256, 0.5, 0.3, {"scrubbed_local": 5, "scrubbed_remote": 1}),
            size_run(1024, 3.0, 2.4, {"scrubbed_local": 12, "scrubbed_remote": 1}),
            size_run(256, 0.7, 0.5, {"scrubbed_local": 4, "scrubbed_remote": 0}),
            size_run(1024, 2.0, 2.2, {"scrubbed_local": 9, "scrubbed_remote": 0})]
    big, small = summarize_sizes(runs)
    assert (big["guest_mib"], big["n"], small["guest_mib"], small["n"]) == (1024, 3, 256, 2)
    assert big["destroy_s"] == 2.0 and big["destroy_s_all"] == [1.0, 3.0, 2.0]
    assert big["time_to_clean_s"] == 2.2
    assert small["time_to_clean_s"] == 0.5           # upper median of two
    assert big["scrub"] == {"scrubbed_local": 31, "scrubbed_remote": 1}


def test_a_size_still_dirty_in_half_its_runs_is_reported_still_dirty() -> None:
    (once,) = summarize_sizes([size_run(512, 1.0, None), size_run(512, 1.0, 3.0),
                               size_run(512, 1.0, 4.0)])
    assert once["time_to_clean_s"] == 4.0            # the dirty run counts as slowest
    assert once["time_to_clean_s_all"] == [None, 3.0, 4.0]
    (half,) = summarize_sizes([size_run(512, 1.0, None), size_run(512, 1.0, 3.0)])
    assert half["time_to_clean_s"] is None
    assert half["dirty_pages_left"] == 500
    # stock has no counters: no sum
    assert half["scrub"] is None


def test_alternated_runs_become_a_median_per_gap_and_policy_and_compare_in_the_boot() -> None:
    """--scrub-policy alternate: each repetition ran with the workers on and
    off; the summary keeps them apart, each compares with stock at its gap,
    and on with off in the same boot."""
    def turn(policy: str, create: float, destroy: float) -> dict:  # type: ignore[type-arg]
        return {**gap_run(15.0, create, create / 2, 0, 0), "destroy_s": destroy,
                "scrub_policy": policy}
    runs = [turn("eager", 1.0, 3.0), turn("idle", 4.0, 7.0), turn("idle", 6.0, 3.0),
            turn("eager", 1.4, 3.6), turn("eager", 1.2, 3.4), turn("idle", 4.0, 6.0)]
    gaps = summarize_gaps(runs)
    assert [(g["gap_s"], g["scrub_policy"], g["n"]) for g in gaps] == [
        (15.0, "eager", 3), (15.0, "idle", 3)]
    assert gaps[0]["create_s"] == 1.2 and gaps[1]["destroy_s"] == 6.0
    stock = {"variant": "stock", "gaps": summarize_gaps(
        [gap_run(15.0, 3.0, 1.5, 900, 0), gap_run(15.0, 2.0, 1.0, 900, 0)])}
    assert stock["gaps"][0]["scrub_policy"] is None
    patched = {"variant": "patched", "gaps": [{**g, "alternated": True} for g in gaps]}
    out = ratios([stock, patched])
    assert [(r["scrub_policy"], r["create_vs_stock"]) for r in out] == [
        ("eager", pytest.approx(1.2 / 2.5)), ("idle", pytest.approx(4.0 / 2.5))]
    (same,) = workers_on_vs_off([stock, patched])
    assert same["variant"] == "patched" and same["gap_s"] == 15.0
    assert same["create_vs_off"] == pytest.approx(0.3)
    assert same["destroy_vs_off"] == pytest.approx(3.4 / 6.0)
    # A run that did not alternate has nothing to compare in its boot.
    assert workers_on_vs_off([{"variant": "patched", "gaps": gaps[:1]}]) == []


def test_stock_at_another_gap_gives_no_ratio() -> None:
    out = ratios([run("stock", 4.0, 2.0, 3.0),
                  {"variant": "patched", "gaps": [{"gap_s": 5.0, "create_s": 1.0,
                                                   "destroy_s": 1.0,
                                                   "spin_cpus_busy_during_gap": 1.0}]}])
    assert out == []


def test_a_spinner_weight_the_schedulers_refuse_fails_validation() -> None:
    ScrubParams(spinner_weight=65535).validate()
    with pytest.raises(ValueError, match="weight must be 1..65535, got 65536"):
        ScrubParams(spinner_weight=65536).validate()
