"""The benchmark's summary table: the compact form fits 100 columns whole."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pyxen.lab.host import cli
from pyxen.lab.host.bench import TABLE_WIDTH, summary_table

VARIANTS = ("stock", "patched", "stock+cache", "patched+cache")
HEADERS = ("variant", "C", "makespan s", "ratio", "create s", "xs req", "console", "errors")


def run(variant: str, c: int, profiled: bool = False) -> dict[str, Any]:
    """A run record as bench.json holds it (16 guests; a profile when ``profiled``)."""
    profile = ({"hypercalls": {"domctl": 900}, "counters": {"domctl: retried, lock busy": 80},
                "locks": {"global lock domctl_lock": {"acquisitions": 820}}}
               if profiled else None)
    return {
        "variant": variant, "driver": "pyxen", "guests": 16, "concurrency": c,
        "memory_mib": 16, "makespan_s": 123.456 / c * (1 - VARIANTS.index(variant) / 10),
        "create_s": [0.61 + i / 10 for i in range(16)],
        "running_before_create": list(range(16)), "destroy_s": [0.2] * 16,
        "destroy_makespan_s": 11.9, "xs_requests_per_create": 171.0,
        "xs_client_requests_per_create": 402.3 if variant.endswith("+cache") else 171.0,
        "domctl_hypercalls_per_create": 56.25 if profiled else None,
        "lock_wait_s_per_create": 0.0012 if profiled else None,
        "xl_lock_wait_s_per_create": None, "lock_profile": profile,
        "destroy_lock_profile": profile, "console_ok": 16,
        "errors": ["create bench-3: boom"] if variant == "patched" and c == 8 else [],
        "leftover_domains": [],
    }


def runs(profiled: bool = False) -> list[dict[str, Any]]:
    return [run(v, c, profiled) for v in VARIANTS for c in (1, 2, 4, 8)]


def render(table: Any, width: int = TABLE_WIDTH) -> list[str]:
    con = Console(width=width, record=True)
    con.print(table)
    return con.export_text().splitlines()


@pytest.mark.parametrize("profiled", [False, True])
def test_the_compact_table_fits_100_columns_with_names_and_headers_whole(profiled):
    lines = render(summary_table(runs(profiled), ["note: 'patched' is identical to stock"]))
    assert max(len(line) for line in lines) <= TABLE_WIDTH
    cells = [c.strip() for line in lines for c in line.replace("┃", "│").split("│")]
    for name in VARIANTS:
        assert cells.count(name) == 4, name    # whole, one row per concurrency
    for header in HEADERS + (("retries",) if profiled else ()):
        assert header in cells, header
    assert "…" not in "".join(lines)
    assert "1" in cells    # the one error of patched at C=8


def test_the_wide_table_keeps_every_column():
    lines = render(summary_table(runs(True), [], wide=True), width=400)
    text = "\n".join(lines)
    for header in ("driver", "last/first create", "client xs req/create",
                   "xs req/create (xenstored)", "domctl retries/create",
                   "lock wait ms/create", "xl lock wait s/create"):
        assert header in text
    assert "402.3" in text     # the proxy's client requests per create
    assert "destroyed scrubbed meanwhile %" in text


def test_the_wide_table_gives_the_destroyed_memory_scrubbed_meanwhile():
    r = run("patched", 1, profiled=True)
    # 16 guests of 16 MiB: 65536 pages; a quarter scrubbed in the background
    r["destroy_lock_profile"] = {**r["destroy_lock_profile"],
                                 "counters": {"scrub: pages scrubbed in the background": 16384}}
    without = run("stock", 1, profiled=True)   # a build without the counter
    lines = render(summary_table([without, r], [], wide=True), width=400)
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")]
            for line in lines if line.count("│") > 5 and ("patched" in line or "stock" in line)}
    assert rows["patched"][-3] == "25" and rows["stock"][-3] == "-"


def test_the_table_leaves_the_runs_unchanged():
    rs = runs(True)
    saved = copy.deepcopy(rs)
    summary_table(rs, [])
    summary_table(rs, [], wide=True)
    assert rs == saved


@pytest.mark.parametrize("wide", [False, True])
def test_plot_prints_the_table_whole_and_leaves_bench_json_alone(tmp_path: Path, capsys,
                                                                  wide: bool):
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps({"runs": runs(), "notes": []}, indent=2))
    before = saved.read_bytes()
    assert cli.main(["plot", str(saved)] + (["--wide"] if wide else [])) == 0
    assert saved.read_bytes() == before
    out = capsys.readouterr().out
    for name in VARIANTS:
        assert f" {name} " in out
    if wide:
        assert "xs req/create (xenstored)" in out
    else:
        assert max(len(line) for line in out.splitlines()) <= TABLE_WIDTH


def repeated_runs() -> list[dict[str, Any]]:
    """Three repetitions of stock and patched at C=1 and C=8, with patched
    at 0.5, 0.6 and 0.9 of the same repetition's stock."""
    out = []
    for rep, (stock_span, share) in enumerate(((10.0, 0.5), (20.0, 0.6), (12.0, 0.9))):
        for variant in ("stock", "patched"):
            for c in (1, 8):
                r = run(variant, c)
                r["repeat"] = rep
                r["makespan_s"] = stock_span * (share if variant == "patched" else 1.0)
                out.append(r)
    return out


def test_ratios_pair_each_run_with_stock_of_its_own_repetition():
    from pyxen.lab.host.storm_summary import summarise

    rows = {(row.variant, row.concurrency): row for row in summarise(repeated_runs())}
    patched = rows[("patched", 8)]
    # per-repetition ratios 0.5, 0.6, 0.9: median 0.6; the ratio of the medians
    # (10.8 / 12) would be 0.9
    assert (patched.ratio, patched.ratio_min, patched.ratio_max) == pytest.approx((0.6, 0.5, 0.9))
    assert patched.repeats == 3 and patched.guests == 48 and patched.console_ok == 48
    assert patched.makespan_s == pytest.approx(10.8)    # median of 5, 12, 10.8
    assert rows[("stock", 1)].ratio == pytest.approx(1.0)


def test_repeated_table_shows_medians_and_ranges_within_100_columns():
    lines = render(summary_table(repeated_runs(), []))
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= TABLE_WIDTH
    assert "medians of 3 repetitions" in text
    assert "0.60 (0.50-0.90)" in text
    assert "…" not in text
    wide = "\n".join(render(summary_table(repeated_runs(), [], wide=True), width=400))
    assert wide.count("patched") == 6              # every repetition's run in the wide table


def test_a_run_without_its_repetitions_stock_has_no_ratio():
    from pyxen.lab.host.storm_summary import summarise

    rs = [r for r in repeated_runs() if not (r["variant"] == "stock" and r["repeat"] == 2)]
    rows = {(row.variant, row.concurrency): row for row in summarise(rs)}
    assert rows[("patched", 8)].ratio_max == pytest.approx(0.6)   # repetition 2 unpaired


def test_bench_rejects_zero_repetitions():
    from pyxen.lab.host.bench import BenchParams

    with pytest.raises(ValueError, match="--repeat"):
        BenchParams(16, (1,), repeat=0).validate()


def test_plot_and_replot_of_repeated_runs(tmp_path):
    """A bench.json with repetitions redraws (one legend entry per variant
    and C) and prints its table with medians."""
    from pyxen.lab.host.bench import replot

    doc = {"runs": repeated_runs(), "notes": []}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    png = replot(path)
    assert png == tmp_path / "bench.png" and png.stat().st_size > 10_000


def test_replot_names_a_file_without_runs(tmp_path):
    from pyxen.lab.contract.errors import LabError
    from pyxen.lab.host.bench import replot

    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"vm": {}}))
    with pytest.raises(LabError, match="no benchmark runs"):
        replot(path)


def test_storms_beside_running_guests_say_so_with_xenstored_s_files() -> None:
    rs = runs()
    for r in rs:
        r["running"] = {"count": 64, "up": 64, "start_s": 40.0, "xenstored_fds_without": 20,
                        "xenstored_fds_with": 150 if r["variant"].startswith("stock") else 151}
    text = " ".join(" ".join(render(summary_table(rs, []))).split())
    assert "64 other guests running" in text
    assert "none -> all running guests up: stock 20 -> 150, patched 20 -> 151" in text
    assert "other guests running" not in "\n".join(render(summary_table(runs(), [])))
