"""Pool the birth-after-death runs of one command over several invocations
(each a boot per variant): every variant's gap runs together, summarised and
compared with stock by the lab's own functions, as if one run had had all
the repetitions.  Usage: python pool.py RUN_DIR... (each with bench.json)."""
import json
import sys
from pathlib import Path
from typing import Any

from pyxen.lab.host.scrubbench import ratios, summarize_gaps, workers_on_vs_off


def pooled(dirs: list[Path]) -> list[dict[str, Any]]:
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        for run in json.loads((d / "bench.json").read_text())["birth_after_death"]["runs"]:
            by_variant.setdefault(run["variant"], []).extend(run["gap_runs"])
    return [{"variant": v, "gaps": [{**g, "alternated": len({r.get("scrub_policy") for r in gs}) > 1}
                                    for g in summarize_gaps(gs)]}
            for v, gs in by_variant.items()]


if __name__ == "__main__":
    runs = pooled([Path(a) for a in sys.argv[1:]])
    for r in runs:
        for g in r["gaps"]:
            print(f"{r['variant']} {g['scrub_policy']}: n={g['n']} create {g['create_s']:.2f} s "
                  f"destroy {g['destroy_s']:.2f} s, dirty met {g['dirty_pages_at_create']:.0f}")
    for x in ratios(runs) + workers_on_vs_off(runs):
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in x.items()})
