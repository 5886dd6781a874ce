"""Host side of "birth after death under load" (issue 6): boot each variant
with two NUMA nodes and every pCPU busy, run pyxen.lab.scrub_dom0 in its dom0,
and add a ``birth_after_death`` section to ``bench.json`` (kept next to what
the boot-storm benchmark wrote there) with a plot, stock vs the others."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from pyxen.lab import paths, variants
from pyxen.lab.errors import LabError
from pyxen.lab.progress import console, step
from pyxen.lab.vm import Dom0
from pyxen.lab.vm_options import VMOptions
from pyxen.lab.xenbuild import build

log = logging.getLogger(__name__)

#: The machine the benchmark needs: 4 pCPUs over 2 NUMA nodes, 2 GiB each.
SCRUB_VM = VMOptions(cpus=4, memory_mib=4096, numa_nodes=2)


def run_variant(name: str, options: VMOptions, gaps: str, guest_mib: int,
                sizes: str, clean_timeout: float) -> dict[str, Any]:
    staged = build(variants.resolve(name))
    guest = paths.tinyguest_path()
    with step(f"birth after death on {name}"), Dom0(staged, options) as dom0:
        res = dom0.run([sys.executable, "-X", "faulthandler", "-m", "pyxen.lab.scrub_dom0", "--kernel", str(guest),
                        "--gaps", gaps, "--guest-mib", str(guest_mib), "--sizes", sizes,
                        "--clean-timeout", str(clean_timeout)], timeout=3600)
    result_file = res.files / "result.json"
    if res.returncode != 0 or not result_file.exists():
        raise LabError(f"birth-after-death benchmark failed on {name} ({res.returncode}):\n"
                       f"{res.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    return {"variant": name, "hypervisor_key": staged.hypervisor_key,
            "patches": [p.name for p in staged.variant.patches], **result}


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant other than stock and per gap: create and destroy time, and
    the spinners' throughput during the gap, as ratios to stock."""
    stock = next((r for r in runs if r["variant"] == "stock"), None)
    out: list[dict[str, Any]] = []
    if stock is None:
        return out
    for r in runs:
        if r is stock:
            continue
        for g, s in zip(r["gaps"], stock["gaps"]):
            spin = (g["spin_cpus_busy_during_gap"] / s["spin_cpus_busy_during_gap"]
                    if g["spin_cpus_busy_during_gap"] and s["spin_cpus_busy_during_gap"]
                    else None)
            out.append({"variant": r["variant"], "gap_s": g["gap_s"],
                        "create_vs_stock": g["create_s"] / s["create_s"],
                        "destroy_vs_stock": g["destroy_s"] / s["destroy_s"],
                        "spin_throughput_vs_stock": spin})
    return out


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        gaps = [g["gap_s"] for g in r["gaps"]]
        a.plot(gaps, [g["create_s"] for g in r["gaps"]], marker="o", label=r["variant"])
        sizes = [s["guest_mib"] for s in r["sizes"]]
        clean = [s["time_to_clean_s"] if s["time_to_clean_s"] is not None
                 else r["clean_timeout_s"] for s in r["sizes"]]
        b.plot(sizes, clean, marker="o", label=f"{r['variant']} (cap = still dirty)")
    a.set(xlabel="gap between death and birth (s)", ylabel="create time (s)",
          title="birth after death, every pCPU busy")
    b.set(xlabel="dead guest memory (MiB)", ylabel="time until its memory is clean (s)",
          xscale="log", title="time to clean")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_scrub_bench(variant_names: list[str], out_dir: Path, gaps: str = "0,0.5,2,5",
                    guest_mib: int = 512, sizes: str = "64,256,512,1024",
                    clean_timeout: float = 60.0,
                    options: VMOptions = SCRUB_VM) -> dict[str, Any]:
    options.validate()
    if options.numa_nodes < 2:
        raise ValueError("the birth-after-death benchmark needs --numa-nodes 2 or more")
    runs = [run_variant(n, options, gaps, guest_mib, sizes, clean_timeout)
            for n in variant_names]
    out_dir.mkdir(parents=True, exist_ok=True)
    bench_json = out_dir / "bench.json"
    doc: dict[str, Any] = json.loads(bench_json.read_text()) if bench_json.exists() else {}
    doc["birth_after_death"] = {
        "vm": {"cpus": options.cpus, "memory_mib": options.memory_mib,
               "numa_nodes": options.numa_nodes, "dom0_mem_mib": options.dom0_mem_mib,
               "accel": "tcg"},
        "guest_node": 1,
        "runs": runs,
        "ratios": ratios(runs),
    }
    bench_json.write_text(json.dumps(doc, indent=2, allow_nan=False))
    plot(runs, out_dir / "birth_after_death.png")
    for r in doc["birth_after_death"]["ratios"]:
        console().print(
            f"{r['variant']} G={r['gap_s']}s: create {r['create_vs_stock']:.2f}x stock, "
            f"destroy {r['destroy_vs_stock']:.2f}x, spinners "
            + (f"{r['spin_throughput_vs_stock']:.2f}x" if r["spin_throughput_vs_stock"]
               else "n/a"))
    for run in runs:
        for s in run["sizes"]:
            console().print(f"{run['variant']} {s['guest_mib']} MiB: destroy "
                            f"{s['destroy_s']:.2f} s, clean after "
                            + (f"{s['time_to_clean_s']:.1f} s" if s["time_to_clean_s"]
                               is not None else f"> {run['clean_timeout_s']} s (still dirty)"))
    console().print(f"wrote {bench_json} (birth_after_death) and "
                    f"{out_dir / 'birth_after_death.png'}")
    return doc
