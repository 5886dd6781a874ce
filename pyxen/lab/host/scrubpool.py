"""Birth-after-death runs pooled over boots.

Each ``scrubbench`` invocation boots every variant once, and a variant's
figures move from boot to boot about as much as the variants differ.  This
pools the gap runs of several invocations of one command, variant by
variant, and summarises and compares them with stock by the benchmark's
own functions, as if one invocation had had all the repetitions.  Runs that
measured something else (another VM, load, guest, gaps or build) are
refused, naming the run and what differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host.benchfile import BENCH_JSON, load_bench
from pyxen.lab.host.scrubbench import (gap_ratio_lines, gap_summaries, policy_suffix, ratios,
                                       workers_on_vs_off)

#: The saved section a scrubbench invocation writes into its bench.json.
SECTION = "birth_after_death"

#: What every pooled run of a variant must share with the variant's first.
SAME_PER_VARIANT = ("hypervisor_key", "tools_key", "pcpus", "spinners", "spinner_weight",
                    "fill", "scrub_policy", "scrub_alternated")


@dataclass(frozen=True)
class Invocation:
    """One scrubbench invocation's saved section, and where it came from."""

    source: str
    section: dict[str, Any]


def load_invocations(dirs: list[Path]) -> list[Invocation]:
    """The birth-after-death section of each directory's bench.json.
    LabError naming the directory when it has none."""
    out = []
    for d in dirs:
        doc = load_bench(d / BENCH_JSON, require_runs=False)
        section = doc.get(SECTION)
        if not isinstance(section, dict) or not isinstance(section.get("runs"), list):
            raise LabError(f"{d}: its bench.json has no {SECTION} section "
                           "(is it a 'python -m pyxen.lab scrubbench' run?)")
        out.append(Invocation(str(d), section))
    return out


#: What pooling reads of every gap run, whatever else it holds.
GAP_RUN_KEYS = ("gap_s", "guest_mib")


def _check_run(source: str, run: Any) -> None:
    """ValueError naming the invocation when a saved run lacks what pooling
    reads: its variant's name and its gap runs, each with gap and guest size."""
    if not isinstance(run, dict) or not isinstance(run.get("variant"), str):
        raise ValueError(f"{source}: a run without a variant name: {str(run)[:80]}")
    gaps = run.get("gap_runs")
    if not isinstance(gaps, list):
        raise ValueError(f"{source}: {run['variant']} has no gap_runs list")
    for i, g in enumerate(gaps):
        missing = [k for k in GAP_RUN_KEYS if not isinstance(g, dict) or k not in g]
        if missing:
            raise ValueError(f"{source}: {run['variant']}'s gap run {i} lacks "
                             f"{', '.join(missing)}")
        wrong = [k for k in GAP_RUN_KEYS
                 if not isinstance(g[k], (int, float)) or isinstance(g[k], bool)]
        if wrong:
            raise ValueError(f"{source}: {run['variant']}'s gap run {i} has "
                             + ", ".join(f"{k} {g[k]!r}" for k in wrong) + ", not numbers")


def _gap_keys(run: dict[str, Any]) -> set[tuple[float, int]]:
    return {(g["gap_s"], g["guest_mib"]) for g in run["gap_runs"]}


def pool(invocations: list[Invocation]) -> dict[str, Any]:
    """The invocations' gap runs pooled per variant: ``runs`` (each variant
    with its pooled per-gap summaries, ``boots`` and the gap runs' count),
    ``ratios`` against stock and ``workers_on_vs_off``, as the benchmark
    computes them for one invocation.  ValueError naming the invocation
    when it measured something else than the first."""
    if not invocations:
        raise ValueError("nothing to pool: give one or more scrubbench output directories")
    vm = invocations[0].section.get("vm")
    first: dict[str, dict[str, Any]] = {}
    gap_runs: dict[str, list[dict[str, Any]]] = {}
    boots: dict[str, int] = {}
    for inv in invocations:
        if inv.section.get("vm") != vm:
            raise ValueError(f"{inv.source}: another VM ({inv.section.get('vm')}) than "
                             f"{invocations[0].source}'s ({vm})")
        seen: set[str] = set()
        for run in inv.section["runs"]:
            _check_run(inv.source, run)
            name = run["variant"]
            if name in seen:
                raise ValueError(f"{inv.source}: variant {name} ran twice in one invocation")
            seen.add(name)
            base = first.setdefault(name, run)
            diff = [k for k in SAME_PER_VARIANT if run.get(k) != base.get(k)]
            if diff:
                raise ValueError(f"{inv.source}: {name} differs from its first run in "
                                 f"{', '.join(diff)}")
            if _gap_keys(run) != _gap_keys(base):
                raise ValueError(f"{inv.source}: {name} ran other gaps or guest sizes "
                                 f"({sorted(_gap_keys(run))} against "
                                 f"{sorted(_gap_keys(base))})")
            gap_runs.setdefault(name, []).extend(run["gap_runs"])
            boots[name] = boots.get(name, 0) + 1
    runs = [{"variant": name, "boots": boots[name],
             "gaps": gap_summaries(gs, bool(first[name].get("scrub_alternated")))}
            for name, gs in gap_runs.items()]
    return {"vm": vm, "sources": [inv.source for inv in invocations], "runs": runs,
            "ratios": ratios(runs), "workers_on_vs_off": workers_on_vs_off(runs)}


def pooled_lines(pooled: dict[str, Any]) -> list[str]:
    """What ``scrubpool`` prints: each variant's pooled gaps, then the
    ratios, in the benchmark's own wording."""
    lines = []
    for run in pooled["runs"]:
        for g in run["gaps"]:
            lines.append(f"{run['variant']}{policy_suffix(g)} G={g['gap_s']}s: "
                         f"{run['boots']} boots, n={g['n']}, create {g['create_s']:.2f} s, destroy "
                         f"{g['destroy_s']:.2f} s, dirty pages met "
                         f"{g['dirty_pages_at_create']:.0f}")
    return lines + gap_ratio_lines(pooled["ratios"], pooled["workers_on_vs_off"])


def write_pooled(pooled: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pooled, indent=2, allow_nan=False))
