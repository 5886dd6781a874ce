"""Host side of "birth after death under load": boot each variant with two
NUMA nodes and every pCPU busy, run pyxen.lab.dom0.scrub_dom0 in its dom0,
and add a ``birth_after_death`` section to ``bench.json`` (kept next to what
the boot-storm benchmark wrote there) with a plot, stock vs the others."""

from __future__ import annotations

import logging
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyxen.config import validate_weight
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.heapdump import dma_width
from pyxen.lab.contract.requests import ScrubRequest
from pyxen.lab.contract.xenprof import PHASE_FIGURES
from pyxen.lab.host import figures, paths
from pyxen.lab.host.benchfile import (BENCH_FORMAT, BENCH_JSON, failed_name, failed_runs_error,
                                      saved_bench, write_json, write_storm_sections)
from pyxen.lab.host.progress import say, step
from pyxen.lab.host.provenance import describe_build
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild, Variant, build

log = logging.getLogger(__name__)

#: The machine the benchmark needs: 4 pCPUs over 2 NUMA nodes, 2 GiB each.
SCRUB_VM = VMOptions(cpus=4, memory_mib=4096, numa_nodes=2)


@dataclass(frozen=True)
class ScrubParams:
    """What the user chooses of a birth-after-death run (``python -m
    pyxen.lab scrubbench``); each variant's run sends them to dom0 as a
    ScrubRequest (see there what each means)."""

    gaps: tuple[float, ...] = protocol.SCRUB_GAPS_DEFAULT
    guest_mib: int = 512
    sizes: tuple[int, ...] = protocol.SCRUB_SIZES_DEFAULT
    clean_timeout: float = 60.0
    reps: int = 1
    size_reps: int = 1
    fill: str = protocol.SCRUB_FILL_DEFAULT
    scrub_policy: str = protocol.SCRUB_POLICY_DEFAULT
    spinners: int | None = None
    spinner_weight: int | None = None

    def request(self, kernel: Path, dma_bits: int | None) -> ScrubRequest:
        """What scrub_dom0 is asked, on a Xen of DMA width ``dma_bits``."""
        return ScrubRequest(kernel=kernel, gaps=self.gaps, guest_mib=self.guest_mib,
                            sizes=self.sizes, clean_timeout=self.clean_timeout,
                            fill=self.fill, dma_bits=dma_bits, reps=self.reps,
                            size_reps=self.size_reps, scrub_policy=self.scrub_policy,
                            spinners=self.spinners, spinner_weight=self.spinner_weight)

    def validate(self) -> None:
        """ValueError naming a bad field: the request checks every one, and
        the spinners' weight is one the schedulers take."""
        self.request(Path("/"), None)
        if self.spinner_weight is not None:
            validate_weight(self.spinner_weight)


#: A destroy's figures from Xen's profile (profiling builds, ``--profile``).
DESTROY_PROFILE_FIELDS = tuple(f"destroy_{k}" for k in PHASE_FIGURES)

#: Per-run numbers of a gap run that the per-gap summary gives as a median,
#: with every repetition's value beside it (``<field>_all``).
GAP_FIELDS = ("create_s", "destroy_s", "create_dom0_cpu_s", "destroy_dom0_cpu_s",
              "spin_cpus_busy_during_gap", "spin_cpus_busy_during_create",
              "dirty_pages_at_create", "dirty_pages_after_create", "born_on_node_fraction",
              *DESTROY_PROFILE_FIELDS)


#: Fields of a size run (one destroy, then the wait for clean memory) given
#: as medians; the time to clean is summarised on its own (summarize_sizes).
SIZE_FIELDS = ("destroy_s", "dirty_pages_left", *DESTROY_PROFILE_FIELDS)

#: Dirty pages (16 MiB) the births of a variant must differ by to fit a cost.
MIN_PAGE_SPREAD = 4096
#: ... and by at least this share of the most pages any of them scrubbed: a
#: cluster far from 0 (stock's births, all ~514 thousand but one) would put
#: the intercept, the clean birth, far outside what was measured.
MIN_PAGE_SPREAD_SHARE = 0.5


def _by(runs: list[dict[str, Any]],
        key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    """The runs grouped by ``key(run)``, in the order each value first ran."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(key(r), []).append(r)
    return groups


def _median_fields(rs: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, Any]:
    """Each field's median over ``rs`` and every value (``<field>_all``); a
    field a run lacks or has as None is left out (None when no run has it)."""
    entry: dict[str, Any] = {}
    for f in fields:
        vals = [r[f] for r in rs if r.get(f) is not None]
        entry[f] = statistics.median(vals) if vals else None
        entry[f + "_all"] = vals
    return entry


def summarize_gaps(gap_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per gap and scrub policy (in the order first run; runs
    without a policy recorded count as one), its fields the median over
    the repetitions."""
    return [{"gap_s": gap, "scrub_policy": policy, "guest_mib": rs[0]["guest_mib"],
             "n": len(rs), **_median_fields(rs, GAP_FIELDS)}
            for (gap, policy), rs in _by(gap_runs, lambda r: (r["gap_s"],
                                                              r.get("scrub_policy"))).items()]


def gap_summaries(gap_runs: list[dict[str, Any]], alternated: bool) -> list[dict[str, Any]]:
    """A run's per-gap (and policy) summaries, each saying whether the run
    alternated the scrub policy (``alternated``)."""
    return [{**g, "alternated": alternated} for g in summarize_gaps(gap_runs)]


def summarize_sizes(size_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per guest size (in the order first run): destroy time and
    pages left dirty as medians over the repetitions; the time to clean as
    the upper median, a run still dirty at the timeout counting as slower
    than any that cleaned (None, still dirty, when half or more of the runs
    were); the scrub counters summed over the runs (None if one lacks them)."""
    out: list[dict[str, Any]] = []
    for mib, rs in _by(size_runs, lambda r: r["guest_mib"]).items():
        clean = [r["time_to_clean_s"] for r in rs]
        upper = statistics.median_high([math.inf if c is None else c for c in clean])
        counters: list[dict[str, int]] = [r["scrub"] for r in rs if r.get("scrub") is not None]
        out.append({"guest_mib": mib, "n": len(rs),
                    **_median_fields(rs, SIZE_FIELDS),
                    "time_to_clean_s": None if math.isinf(upper) else upper,
                    "time_to_clean_s_all": clean,
                    "scrub": None if len(counters) < len(rs) else {
                        k: sum(c[k] for c in counters) for k in counters[0]}})
    return out


def pages_scrubbed_by_create(run: dict[str, Any]) -> int | None:
    """Dirty pages a create scrubbed: the scrub sysctl's count at allocation
    where Xen has it; else (stock) the dirty pages that disappeared while it
    ran -- on a busy host its own allocations scrubbed them, bar what the
    little idle time left cleaned."""
    counters = run.get("scrub_during_create")
    if counters is not None:
        return int(counters["scrubbed_alloc"])
    after = run.get("dirty_pages_after_create")
    if after is None:
        return None
    return max(0, int(run["dirty_pages_at_create"]) - int(after))


def birth_scrub_cost(gap_runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Least squares of a create's dom0 CPU time against the dirty pages the
    create scrubbed: the slope is what a dirty page costs a birth, the
    intercept what a birth costs with clean memory.  None with fewer than 3
    runs, or when the fewest and most pages differ by under MIN_PAGE_SPREAD
    or under MIN_PAGE_SPREAD_SHARE of the most (no slope to fit: stock's
    births on a busy host all scrub about the same, a patched Xen's next to
    none)."""
    pts = [(float(p), r["create_dom0_cpu_s"]) for r in gap_runs
           if (p := pages_scrubbed_by_create(r)) is not None
           and r.get("create_dom0_cpu_s") is not None]
    if len(pts) < 3:
        return None
    pages_seen = [p for p, _ in pts]
    spread = max(pages_seen) - min(pages_seen)
    if spread < max(MIN_PAGE_SPREAD, MIN_PAGE_SPREAD_SHARE * max(pages_seen)):
        return None
    fit = statistics.linear_regression(pages_seen, [c for _, c in pts])
    return {"runs": len(pts), "us_per_page": fit.slope * 1e6,
            "clean_create_cpu_s": fit.intercept}


def scrub_bound(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An estimate of the create ratio against stock of a birth that never
    scrubs: fit what a dirty page costs a birth over every variant's creates
    together (the create path is the same but for the scrubbing), then
    clean birth / (clean birth + cost of the pages stock's births scrubbed,
    median).  A linear fit's estimate, not a bound: measured births have
    beaten it (a heap with fewer dirty pages costs a birth less besides
    their scrubbing).  The key names (``scrub_bound``,
    ``best_create_ratio``) stay those of the saved runs.  None without stock
    or without spread to fit."""
    stock = next((r for r in runs if r["variant"] == "stock"), None)
    if stock is None:
        return None
    cost = birth_scrub_cost([g for r in runs for g in r.get("gap_runs", [])])
    pages = [p for g in stock.get("gap_runs", [])
             if (p := pages_scrubbed_by_create(g)) is not None]
    if cost is None or not pages:
        return None
    stock_pages = statistics.median(pages)
    scrub_s = cost["us_per_page"] * 1e-6 * stock_pages
    full = cost["clean_create_cpu_s"] + scrub_s
    return {**cost, "stock_pages_scrubbed": stock_pages, "stock_scrub_cpu_s": scrub_s,
            "best_create_ratio": cost["clean_create_cpu_s"] / full if full > 0 else None}


def destroy_profile_text(entry: dict[str, Any]) -> str:
    """A summary entry's destroy figures from Xen's profile (medians), in words."""
    scrubbed = entry.get("destroy_background_scrubbed")
    return (f"heap_lock wait {1000 * entry['destroy_heap_lock_wait_s']:.1f} ms "
            f"({entry['destroy_heap_lock_blocked']:.0f} waits), held "
            f"{entry['destroy_heap_lock_held_s']:.2f} s, {entry['destroy_domctl_entries']:.0f} "
            "domctl entries, "
            + ("?" if scrubbed is None else f"{scrubbed:.0f}")
            + " pages scrubbed in the background (medians)")


def policy_suffix(entry: dict[str, Any]) -> str:
    """' (eager)' for an entry of a run that alternated the scrub policy, ''
    for any other: what follows a variant's name in every line and label."""
    return f" ({entry['scrub_policy']})" if entry.get("alternated") else ""


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def run_variant(variant: Variant, staged: StagedBuild, options: VMOptions,
                params: ScrubParams) -> dict[str, Any]:
    """One variant's run in a fresh boot of its build: scrub_dom0's result
    with its summaries.  A run whose boot or driver failed is kept with its
    ``errors`` (what was measured before the failure too): exit 1 is a run
    that finished and lists errors, such as a guest its clean-up could not
    destroy (``leftover_domains``)."""
    name = variant.name
    guest = paths.tinyguest_path().absolute()
    try:
        with step(f"birth after death on {name}"), Dom0(staged, options) as dom0:
            req = params.request(guest, dma_width(dom0.serial_log.read_text(errors="replace")))
            res = dom0.run([sys.executable, "-X", "faulthandler", "-m",
                            "pyxen.lab.dom0.scrub_dom0", "--request", req.to_json()],
                           timeout=3600 * (params.reps + params.size_reps))
            backing = dom0.ram_backing()
        result = res.json_file(protocol.RESULT_FILE, f"the birth-after-death benchmark on {name}",
                               ok_codes=(0, 1))
    except LabError as exc:
        result, backing = {"errors": [str(exc)]}, None
    result.setdefault("errors", ["scrub_dom0 handed back no errors list"])
    result.setdefault("size_runs", [])
    result.setdefault("gap_runs", [])
    result.setdefault("leftover_domains", [])
    result["qemu_ram_backing"] = backing
    # Summarised also when the run failed: a clean-up that left a guest
    # behind leaves complete measurements (but they are not compared).
    result["sizes"] = summarize_sizes(result["size_runs"])
    result["gaps"] = gap_summaries(result["gap_runs"], bool(result.get("scrub_alternated")))
    result["birth_scrub_cost"] = birth_scrub_cost(result["gap_runs"])
    return {"variant": name, **describe_build(staged), **result}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant other than stock, per gap and scrub policy: create and
    destroy time (and dom0 CPU time, where measured), and the spinners'
    throughput during the gap, as ratios to stock's at the same gap
    (medians over the repetitions)."""
    stock = next((r for r in runs if r["variant"] == "stock"), None)
    out: list[dict[str, Any]] = []
    if stock is None:
        return out
    stock_gaps = {s["gap_s"]: s for s in stock["gaps"]}
    for r in runs:
        if r is stock:
            continue
        for g in r["gaps"]:
            s = stock_gaps.get(g["gap_s"])
            if s is None:
                continue
            out.append({"variant": r["variant"], "gap_s": g["gap_s"],
                        "scrub_policy": g.get("scrub_policy"),
                        "alternated": g.get("alternated", False),
                        **_gap_ratios(g, s, "stock")})
    return out


def _gap_ratios(g: dict[str, Any], base: dict[str, Any], name: str) -> dict[str, Any]:
    """A gap entry's figures over another's, keys ending in ``_vs_<name>``."""
    return {f"create_vs_{name}": _ratio(g["create_s"], base["create_s"]),
            f"destroy_vs_{name}": _ratio(g["destroy_s"], base["destroy_s"]),
            f"create_cpu_vs_{name}": _ratio(g.get("create_dom0_cpu_s"),
                                            base.get("create_dom0_cpu_s")),
            f"destroy_cpu_vs_{name}": _ratio(g.get("destroy_dom0_cpu_s"),
                                             base.get("destroy_dom0_cpu_s")),
            f"spin_throughput_vs_{name}": _ratio(g["spin_cpus_busy_during_gap"],
                                                 base["spin_cpus_busy_during_gap"])}


def workers_on_vs_off(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant whose gap runs alternated the scrub policy, per gap: the
    figures with the workers on over those with them off, in the same boot
    (medians over the repetitions)."""
    on, off = protocol.SCRUB_ALTERNATION
    out: list[dict[str, Any]] = []
    for r in runs:
        by = {(g["gap_s"], g.get("scrub_policy")): g for g in r["gaps"]}
        for (gap, policy), g in by.items():
            if policy == on and (gap, off) in by:
                out.append({"variant": r["variant"], "gap_s": gap,
                            **_gap_ratios(g, by[(gap, off)], "off")})
    return out


def gap_ratio_lines(against_stock: list[dict[str, Any]],
                    on_vs_off: list[dict[str, Any]]) -> list[str]:
    """The lines that give ``ratios()`` and ``workers_on_vs_off()``."""
    lines = [f"{r['variant']}{policy_suffix(r)} G={r['gap_s']}s: create {_x(r['create_vs_stock'])} "
             f"stock (dom0 CPU {_x(r['create_cpu_vs_stock'])}), destroy "
             f"{_x(r['destroy_vs_stock'])} (dom0 CPU {_x(r['destroy_cpu_vs_stock'])}), "
             f"spinners {_x(r['spin_throughput_vs_stock'])}" for r in against_stock]
    lines += [f"{r['variant']} G={r['gap_s']}s, workers on against off in the same boot: "
              f"create {_x(r['create_vs_off'])} (dom0 CPU {_x(r['create_cpu_vs_off'])}), "
              f"destroy {_x(r['destroy_vs_off'])} (dom0 CPU {_x(r['destroy_cpu_vs_off'])}), "
              f"spinners {_x(r['spin_throughput_vs_off'])}" for r in on_vs_off]
    return lines


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4))
    for r in runs:
        for policy, entries in _by(r["gaps"], lambda g: g.get("scrub_policy")).items():
            gaps = [g["gap_s"] for g in entries]
            med = [g["create_s"] for g in entries]
            spread = [g.get("create_s_all") or [g["create_s"]] for g in entries]
            a.errorbar(gaps, med, yerr=[[m - min(v) for m, v in zip(med, spread)],
                                        [max(v) - m for m, v in zip(med, spread)]],
                       marker="o", capsize=3, label=r["variant"] + policy_suffix(entries[0]))
        sizes = [s["guest_mib"] for s in r["sizes"]]
        clean = [s["time_to_clean_s"] if s["time_to_clean_s"] is not None
                 else r["clean_timeout_s"] for s in r["sizes"]]
        b.plot(sizes, clean, marker="o", label=f"{r['variant']} (cap = still dirty)")
        pts = [(p, g["create_dom0_cpu_s"]) for g in r.get("gap_runs", [])
               if (p := pages_scrubbed_by_create(g)) is not None]
        if pts:
            c.scatter([p for p, _ in pts], [t for _, t in pts], label=r["variant"])
    a.set(xlabel="gap between death and birth (s)", ylabel="create time (s)",
          title="birth after death, every pCPU busy (median, min-max)")
    b.set(xlabel="dead guest memory (MiB)", ylabel="time until its memory is clean (s)",
          xscale="log", title="time to clean")
    c.set(xlabel="dirty pages the create scrubbed", ylabel="dom0 CPU time of the create (s)",
          title="what a birth pays for dirty memory")
    for ax in (a, b, c):
        ax.grid(True, alpha=0.3)
        ax.legend()
    figures.save(fig, path)


def run_scrub_bench(resolved: list[Variant], params: ScrubParams, options: VMOptions,
                    out_dir: Path) -> dict[str, Any]:
    """Build every variant (the caller resolved them all: a bad series fails
    before any build; a failed build before any boot), run each in turn, add
    the ``birth_after_death`` section to ``out_dir``'s bench.json (a new one
    when there is none), plot, print the figures.

    A variant whose run failed does not stop the others: its run goes to the
    section's ``failed_runs`` with its errors and what it measured, and the
    ratios, plot and figures come from the others; LabError naming each
    failure after the file is written.  When no variant succeeded the
    section goes to ``bench.failed.json`` and a saved bench.json is kept."""
    params.validate()
    options.validate()
    if options.numa_nodes < 2:
        raise ValueError("the birth-after-death benchmark needs --numa-nodes 2 or more")
    saved_bench(out_dir)      # a saved file it cannot extend fails before the runs
    staged = [(v, build(v)) for v in resolved]
    every = [run_variant(v, s, options, params) for v, s in staged]
    runs = [r for r in every if not r["errors"]]
    failed = [r for r in every if r["errors"]]
    section = {
        "vm": options.record(),
        "guest_node": 1,
        "scrub_policy_asked": params.scrub_policy,
        "runs": runs,
        "failed_runs": failed,
        "ratios": ratios(runs),
        "workers_on_vs_off": workers_on_vs_off(runs),
        "scrub_bound": scrub_bound(runs),
    }
    if not runs:
        where = out_dir / failed_name(BENCH_JSON)
        write_json(where, {"format": BENCH_FORMAT, "birth_after_death": section})
        raise failed_runs_error("the birth-after-death benchmark", failed, where)
    doc, written, png = write_storm_sections(out_dir, {"birth_after_death": section},
                                             "birth_after_death.png")
    plot(runs, png)
    for line in report_lines(runs, doc["birth_after_death"]):
        say(line)
    say(f"wrote {written} and {png}")
    if failed:
        raise failed_runs_error("the birth-after-death benchmark", failed, written)
    return doc


def report_lines(runs: list[dict[str, Any]], section: dict[str, Any]) -> list[str]:
    """What a run prints: each variant's scrub policy and spinners, the
    ratios, each gap's figures, what a dirty page costs a birth (each
    variant's fit, then all creates'), and each guest size's destroy and
    time to clean."""
    lines = []
    for run in runs:
        pol = run.get("scrub_policy")
        weight = run.get("spinner_weight")
        lines.append(f"{run['variant']}: scrub policy "
                     + ("- (no scrub sysctl: idle CPUs only)" if not pol else
                        f"{pol['policy']} ({pol['budget_us']} us every {pol['period_us']} us)")
                     + f"; {run.get('spinners')} spinners of weight "
                     + ("the default" if weight is None else str(weight)))
    lines += gap_ratio_lines(section["ratios"], section["workers_on_vs_off"])
    for run in runs:
        for g in run["gaps"]:
            frac = g.get("born_on_node_fraction")
            lines.append(
                f"{run['variant']}{policy_suffix(g)} G={g['gap_s']}s: create {g['create_s']:.2f} s "
                f"(n={g['n']}), dirty pages met {g['dirty_pages_at_create']:.0f}"
                + ("" if frac is None else f", new guest {100 * frac:.0f}% on its node"))
            if g.get("destroy_heap_lock_wait_s") is not None:
                lines.append(f"{run['variant']}{policy_suffix(g)} G={g['gap_s']}s destroys, "
                             "in Xen: " + destroy_profile_text(g))
        cost = run.get("birth_scrub_cost")
        if cost:
            lines.append(
                f"{run['variant']}: a dirty page costs a birth {cost['us_per_page']:.2f} us of "
                f"dom0 CPU, a clean birth {cost['clean_create_cpu_s']:.2f} s")
    bound = section["scrub_bound"]
    if bound:
        lines.append(
            f"all creates: {bound['us_per_page']:.2f} us a dirty page, clean birth "
            f"{bound['clean_create_cpu_s']:.2f} s; stock's births scrubbed "
            f"{bound['stock_pages_scrubbed']:.0f} pages ({bound['stock_scrub_cpu_s']:.2f} s): "
            f"a birth that never scrubs would take about "
            f"{_x(bound['best_create_ratio'])} stock's (a linear fit's estimate, not a bound)")
    for run in runs:
        for s in run["sizes"]:
            lines.append(f"{run['variant']} {s['guest_mib']} MiB: destroy "
                         f"{s['destroy_s']:.2f} s (n={s.get('n', 1)}), clean after "
                         + (f"{s['time_to_clean_s']:.1f} s" if s["time_to_clean_s"]
                            is not None else f"> {run['clean_timeout_s']} s (still dirty)"))
            if s.get("destroy_heap_lock_wait_s") is not None:
                lines.append(f"{run['variant']} {s['guest_mib']} MiB destroy, in Xen: "
                             + destroy_profile_text(s))
    return lines
