"""Pool the birth-after-death runs of one command over several invocations
(each a boot per variant): every variant's gap runs together, summarised and
compared with stock by the lab's own functions, as if one run had had all
the repetitions.  Runs that differ in what they measured (the VM, the load,
the guest, the gaps, the builds) are refused.
Usage: python pool.py RUN_DIR... (each with bench.json)."""
import json
import sys
from pathlib import Path
from typing import Any

from pyxen.lab.host.scrubbench import gap_summaries, ratios, workers_on_vs_off

#: What every pooled run of a variant must share.
SAME = ("hypervisor_key", "tools_key", "pcpus", "spinners", "spinner_weight", "fill",
        "scrub_policy", "scrub_alternated")


def pooled(dirs: list[Path]) -> list[dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}
    vm: Any = None
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        section = json.loads((d / "bench.json").read_text())["birth_after_death"]
        if vm is None:
            vm = section["vm"]
        elif section["vm"] != vm:
            raise ValueError(f"{d}: another VM ({section['vm']}) than the first run's ({vm})")
        for run in section["runs"]:
            base = first.setdefault(run["variant"], run)
            diff = [k for k in SAME if run.get(k) != base.get(k)]
            if diff:
                raise ValueError(f"{d}: {run['variant']} differs from its first run in {diff}")
            gaps = {(g["gap_s"], g["guest_mib"]) for g in run["gap_runs"]}
            if gaps != {(g["gap_s"], g["guest_mib"]) for g in base["gap_runs"]}:
                raise ValueError(f"{d}: {run['variant']} ran other gaps or guest sizes")
            by_variant.setdefault(run["variant"], []).extend(run["gap_runs"])
    return [{"variant": v, "gaps": gap_summaries(gs, bool(first[v].get("scrub_alternated")))}
            for v, gs in by_variant.items()]


if __name__ == "__main__":
    runs = pooled([Path(a) for a in sys.argv[1:]])
    for r in runs:
        for g in r["gaps"]:
            print(f"{r['variant']} {g['scrub_policy']}: n={g['n']} create {g['create_s']:.2f} s "
                  f"destroy {g['destroy_s']:.2f} s, dirty met {g['dirty_pages_at_create']:.0f}")
    for x in ratios(runs) + workers_on_vs_off(runs):
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in x.items()})
