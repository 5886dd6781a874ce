"""Host side of the domctl fairness benchmark (``python -m pyxen.lab
domctlbench``): boot each variant, run pyxen.lab.dom0.domctlfair in its dom0
(exclusive domctls timed while other threads create, destroy and read
domains), and report how much slower they get under that load, per variant
and against stock, in the same run."""

from __future__ import annotations

import json
import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from pyxen.lab.contract import protocol
from pyxen.lab.contract.requests import DomctlRequest
from pyxen.lab.host import figures, paths
from pyxen.lab.host.benchfile import failed_runs_error, prepare_out, write_results
from pyxen.lab.host.each_variant import run_each
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.variants import RunVariant
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild

log = logging.getLogger(__name__)

#: domctlbench.json's format; readers refuse a newer one.
DOMCTLBENCH_FORMAT = 1
#: Its file in ``--out``, and its "kind".
DOMCTLBENCH_JSON = "domctlbench.json"
DOMCTLBENCH_KIND = "domctlbench"


@dataclass(frozen=True)
class DomctlParams:
    """What the user chooses of a run (see DomctlRequest)."""

    creators: int = protocol.DOMCTL_CREATORS_DEFAULT
    readers: int = protocol.DOMCTL_READERS_DEFAULT
    probes: int = protocol.DOMCTL_PROBES_DEFAULT
    rounds: int = protocol.DOMCTL_ROUNDS_DEFAULT
    stubs: int = 0

    def request(self) -> DomctlRequest:
        return DomctlRequest(creators=self.creators, readers=self.readers,
                             probes=self.probes, rounds=self.rounds, stubs=self.stubs,
                             kernel=paths.tinyguest_path().absolute() if self.stubs else None)


def run_fairness(dom0: Dom0, request: DomctlRequest) -> dict[str, Any]:
    """One run of the dom0 driver in a booted dom0: its result.json."""
    res = dom0.run([sys.executable, "-m", "pyxen.lab.dom0.domctlfair",
                    "--request", request.to_json()],
                   timeout=300 + request.rounds * request.probes * 2.0)
    # Exit 1: the run finished and its result lists errors.
    return res.json_file(protocol.RESULT_FILE, "the domctl fairness benchmark", ok_codes=(0, 1))


@dataclass(frozen=True)
class Row:
    """One variant, medians over rounds."""

    variant: str
    idle_p50_us: float
    idle_p99_us: float
    loaded_p50_us: float
    loaded_p99_us: float
    loaded_max_us: float
    slowdown_p50: float | None  # loaded over idle, within each round (see _slowdown)
    slowdown_p99: float | None
    creates_per_s: float
    reads_per_s: float
    stub_calls_per_s: float     # domctls the Xenstore stub domains made (0: none ran)
    p99_vs_stock: float | None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _median(rounds: list[dict[str, Any]], key: str, pct: str) -> float:
    return float(statistics.median(r[key][pct] for r in rounds))


def summarise(runs: list[dict[str, Any]]) -> list[Row]:
    """One row per variant that ran (run order)."""
    rows: list[Row] = []
    stock_p99 = None
    for run in runs:
        rounds = run["rounds"]
        if not rounds:
            continue
        loaded_p99 = _median(rounds, "loaded_us", "p99")
        if run["variant"] == "stock":
            stock_p99 = loaded_p99
        rows.append(Row(
            variant=run["variant"],
            idle_p50_us=_median(rounds, "idle_us", "p50"),
            idle_p99_us=_median(rounds, "idle_us", "p99"),
            loaded_p50_us=_median(rounds, "loaded_us", "p50"),
            loaded_p99_us=loaded_p99,
            loaded_max_us=max(r["loaded_us"]["max"] for r in rounds),
            slowdown_p50=_slowdown(rounds, "p50"),
            slowdown_p99=_slowdown(rounds, "p99"),
            creates_per_s=float(statistics.median(r["creates_per_s"] for r in rounds)),
            reads_per_s=float(statistics.median(r["reads_per_s"] for r in rounds)),
            stub_calls_per_s=float(statistics.median(r.get("stub_calls_per_s", 0.0)
                                                     for r in rounds)),
            p99_vs_stock=None))
    return [Row(**{**r.as_json(), "p99_vs_stock":
                   None if stock_p99 is None or r.variant == "stock"
                   else round(r.loaded_p99_us / stock_p99, 3)}) for r in rows]


def _slowdown(rounds: list[dict[str, Any]], q: str) -> float | None:
    """The median over rounds of loaded over idle at percentile ``q``.
    Rounds whose idle figure is 0 are left out: dom0's clock did not move
    across most calls (seen once, in a stock boot's first round, where
    the median idle call measured 0 µs); None if no round is left."""
    each = [r["loaded_us"][q] / r["idle_us"][q] for r in rounds if r["idle_us"][q]]
    if len(each) < len(rounds):
        log.warning("%d of %d rounds' idle %s is 0 µs (dom0's clock did not move): "
                    "left out of the slowdown", len(rounds) - len(each), len(rounds), q)
    return round(statistics.median(each), 2) if each else None


def summary_table(rows: list[Row]) -> Table:
    """The printed table (within 100 columns)."""
    stubs = any(r.stub_calls_per_s for r in rows)
    t = Table(title="pause/unpause while domains are created, destroyed and read "
                    "(µs, medians over rounds)")
    cols = ["variant", "idle p50", "p50", "p99", "max", "p99 x", "creates/s"]
    cols += ["stub/s"] if stubs else []
    for name in cols + ["p99 vs stock"]:
        t.add_column(name, justify="left" if name == "variant" else "right", no_wrap=True)
    for r in rows:
        cells = [r.variant, f"{r.idle_p50_us:.0f}", f"{r.loaded_p50_us:.0f}",
                 f"{r.loaded_p99_us:.0f}", f"{r.loaded_max_us:.0f}",
                 "-" if r.slowdown_p99 is None else f"{r.slowdown_p99:.2f}",
                 f"{r.creates_per_s:.0f}"]
        cells += [f"{r.stub_calls_per_s:.0f}"] if stubs else []
        t.add_row(*cells, "-" if r.p99_vs_stock is None else f"{r.p99_vs_stock:.2f}x")
    t.caption = ("p50, p99, max: under the load; p99 x: over the same round's idle "
                 "probes (p50 x in the JSON); "
                 "creates/s: empty domains the load created (and destroyed) meanwhile"
                 + ("; stub/s: domctls the Xenstore stub domains made" if stubs else ""))
    return t


def plot(runs: list[dict[str, Any]], target: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in runs:
        each = sorted(t for r in run["rounds"] for t in r["loaded_us_each"])
        if each:
            ax.step(each, [(i + 1) / len(each) for i in range(len(each))], where="post",
                    label=run["variant"])
    ax.set_xscale("log")
    ax.set(xlabel="pause or unpause under load, µs", ylabel="fraction of calls",
           title="exclusive domctls while domains are created (CDF)")
    ax.grid(alpha=0.3)
    ax.legend()
    figures.save(fig, target)


def run_domctl_bench(builds: list[tuple[RunVariant, StagedBuild]], params: DomctlParams,
                     options: VMOptions, out_dir: Path) -> dict[str, Any]:
    """Boot each built variant in turn, run the driver, write
    ``domctlbench.json`` and ``domctlbench.png``, print the table; LabError
    after writing them if a variant's run failed (when every one did, the
    runs go to ``domctlbench.failed.json`` and an earlier file is kept)."""
    options.validate()
    request = params.request()
    prepare_out(out_dir, DOMCTLBENCH_JSON, DOMCTLBENCH_KIND)
    runs = run_each(builds, options, "domctl fairness",
                    lambda dom0: run_fairness(dom0, request),
                    {"rounds": [], "leftover_domains": []})
    failed = [r for r in runs if r["errors"]]
    good = [r for r in runs if not r["errors"]]
    rows = summarise(good)
    doc = {
        "format": DOMCTLBENCH_FORMAT,
        "kind": DOMCTLBENCH_KIND,
        "request": json.loads(request.to_json()),
        "runs": runs,
        "summary": [r.as_json() for r in rows],
        "vm": options.record(),
    }
    written = write_results(out_dir, DOMCTLBENCH_JSON, doc, lambda png: plot(good, png),
                            "domctlbench.png", summary_table(rows), any_good=bool(good))
    if failed:
        raise failed_runs_error("the domctl fairness run", failed, written)
    return doc
