"""What an autoscaling replay measured on a few pCPUs projects for a host
with more cores: a queueing model, calibrated on the run, extrapolated with
the serial fraction a boot storm measured.  A projection, not a measurement.

The model: a cold start is one create of service time ``S``, of which a
fraction ``e`` (the storm's serial fraction, clamped to [0, 1]) goes
through one host-wide point at a time and the rest runs on any of the
``n`` pCPUs.  Cold starts arrive as a Poisson stream at rate ``lam``.  The
serial part queues as an M/M/1 queue, the parallel part as ``n``
processor-shared cores, so the mean cold start is::

    T(n, lam) = e*S / (1 - lam*e*S)  +  (1-e)*S / (1 - lam*(1-e)*S/n)

and the host saturates (cold starts wait longer the longer the trace runs)
when ``lam*e*S >= 1`` or ``lam*(1-e)*S >= n``.

Calibration: ``S`` is the value for which ``T(p, lam_run)`` equals the
run's mean cold start, with ``p`` the run's pCPUs and ``lam_run`` its cold
starts per second of replay.  Projections, for each ``n``: the **same
trace** on a host of ``n`` cores (``lam = lam_run``), and the trace
**replicated** so that the load per pCPU stays the measured one
(``lam = lam_run * n / p``).

What it leaves out: the trace's bursts (absorbed into ``S`` by the
calibration), memory (a bigger host is assumed to have it), NUMA, and any
cost that grows with the number of running domains (the storm's serial
fraction was measured at up to 64 of them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host.benchfile import read_results, write_json

FORMULA = ("T(n) = e*S/(1 - lam*e*S) + (1-e)*S/(1 - lam*(1-e)*S/n); S calibrated so "
           "that T(p) at the run's cold-start rate equals its mean cold start; "
           "same trace: lam = the run's rate; replicated: lam = run's rate * n / p (load "
           "per pCPU as measured); e = the boot storm's serial fraction, clamped to [0, 1]")
ASSUMPTIONS = ("Poisson arrivals of cold starts; the serial part of a create is one M/M/1 "
               "queue, the rest shares n cores; memory, NUMA and per-running-domain costs "
               "ignored; a projection, not a measurement")


def mean_cold_start(service_s: float, serial: float, cores: float, rate: float) -> float:
    """T(n, lam) above; ``math.inf`` when the host saturates."""
    serial_load = rate * serial * service_s
    parallel_load = rate * (1 - serial) * service_s / cores
    if serial_load >= 1 or parallel_load >= 1:
        return math.inf
    return (serial * service_s / (1 - serial_load)
            + (1 - serial) * service_s / (1 - parallel_load))


def calibrate(mean_s: float, serial: float, cores: float, rate: float) -> float:
    """The service time S for which the model gives ``mean_s`` (bisection;
    T is increasing in S up to saturation)."""
    if mean_s <= 0 or rate < 0:
        raise ValueError(f"cannot calibrate on a mean of {mean_s} s at {rate}/s")
    lo, hi = 0.0, mean_s          # T(S) >= S, so S <= mean_s
    for _ in range(200):
        mid = (lo + hi) / 2
        if mean_cold_start(mid, serial, cores, rate) < mean_s:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def project_variant(mean_s: float, count: int, span_s: float, pcpus: int,
                    serial_fraction: float, cores: tuple[int, ...]) -> dict[str, Any]:
    e = min(1.0, max(0.0, serial_fraction))
    rate = count / span_s
    service = calibrate(mean_s, e, pcpus, rate)
    out: dict[str, Any] = {
        "measured_mean_cold_start_s": mean_s, "cold_starts_per_s": rate,
        "serial_fraction": serial_fraction, "serial_fraction_used": e,
        "service_s": service,
    }
    for n in cores:
        for key, lam in (("", rate * n / pcpus), ("same_trace_", rate)):
            t = mean_cold_start(service, e, n, lam)
            out[f"{key}mean_cold_start_{n}_cores_s"] = None if math.isinf(t) else t
            out[f"{key}saturated_{n}_cores"] = math.isinf(t)
    return out


def _field(doc: dict[str, Any], where: str, *keys: str) -> Any:
    """``doc[keys[0]][keys[1]]...``; LabError naming ``where`` and the
    first key missing (or under something that is no JSON object)."""
    value: Any = doc
    for i, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise LabError(f"{where} has no {'.'.join(keys[:i + 1])}")
        value = value[key]
    return value


def _number(value: Any, where: str, what: str, positive: bool = False) -> float:
    """``value`` as a finite number (> 0 if ``positive``); LabError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or (positive and value <= 0):
        raise LabError(f"{where}: {what} is {value!r}, not a "
                       + ("positive " if positive else "") + "number")
    return float(value)


def serial_fractions(storm: dict[str, Any], path: Path) -> dict[str, float]:
    proj = storm.get("projection")
    if not isinstance(proj, dict) or not proj:
        raise LabError(f"{path} has no serial fractions (a boot storm's bench.json with "
                       "C=1 and a larger C has them in 'projection')")
    return {v: _number(_field(proj, str(path), v, "serial_fraction"), str(path),
                       f"projection.{v}.serial_fraction")
            for v in proj}


def project(autoscale: dict[str, Any], fractions: dict[str, float], source: str,
            cores: tuple[int, ...] = (16, 64),
            where: str = "the autoscale run") -> dict[str, Any]:
    """The ``projection`` section for an autoscale bench.json: per variant
    with a serial fraction (``+cache`` variants use their build's) and at
    least one cold start.  LabError naming ``where`` (the file) and what
    it lacks when it is not an autoscale run's."""
    if autoscale.get("kind") != "autoscale":
        raise LabError(f"{where}: not an autoscale bench.json (no kind 'autoscale')")
    pcpus = int(_number(_field(autoscale, where, "vm", "cpus"), where, "vm.cpus", True))
    span = _number(_field(autoscale, where, "trace", "after", "span_s"), where,
                   "trace.after.span_s", True)
    sections = _field(autoscale, where, "autoscale")
    if not isinstance(sections, dict):
        raise LabError(f"{where}: autoscale is no JSON object of variants")
    variants: dict[str, Any] = {}
    for name, run in sections.items():
        if not isinstance(run, dict):
            raise LabError(f"{where}: autoscale.{name} is no JSON object")
        build = name.removesuffix("+cache")
        cold = run.get("cold_start_each_s") or []
        if not isinstance(cold, list):
            raise LabError(f"{where}: autoscale.{name}.cold_start_each_s is no list")
        cold = [_number(c, where, f"a cold start of {name}") for c in cold]
        if build not in fractions or not cold:
            continue
        # A pooled section's samples come from several replays of the span.
        replays = run.get("replays") or [run]
        if not isinstance(replays, list) or not all(isinstance(r, dict) for r in replays):
            raise LabError(f"{where}: autoscale.{name}.replays is no list of JSON objects")
        done = sum(1 for r in replays if not r.get("failed_to_run"))
        variants[name] = project_variant(sum(cold) / len(cold), len(cold),
                                         span * max(1, done), pcpus, fractions[build], cores)
    return {"serial_fractions_from": source, "pcpus_measured": pcpus, "cores": list(cores),
            "formula": FORMULA, "assumptions": ASSUMPTIONS, "variants": variants}


def add_projection(bench_json: Path, storm_json: Path,
                   cores: tuple[int, ...] = (16, 64)) -> dict[str, Any]:
    """Write the projection into ``bench_json`` (replacing an older one; the
    measured sections are kept as they are) and return it."""
    doc = read_results(bench_json, "the autoscale results")
    storm = read_results(storm_json, "the boot storm's results")
    source = f"{storm_json} (project commit " \
             f"{_storm_commit(storm) or 'not recorded'})"
    doc["projection"] = project(doc, serial_fractions(storm, storm_json), source, cores,
                                str(bench_json))
    write_json(bench_json, doc)
    result: dict[str, Any] = doc["projection"]
    return result


def _storm_commit(storm: dict[str, Any]) -> str | None:
    runs = storm.get("runs")
    for run in runs if isinstance(runs, list) else []:
        if isinstance(run, dict) and run.get("project_commit"):
            return str(run["project_commit"])[:12]
    return None


def projection_table(proj: dict[str, Any]) -> Table:
    from rich.table import Table
    cores = proj["cores"]
    t = Table(title=f"PROJECTED mean cold start (s) from {proj['pcpus_measured']} pCPUs: "
                    "the same trace / replicated with the cores")
    for col in ("variant", "serial e", "measured", "S (calibrated)",
                *(f"{n} cores" for n in cores)):
        t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)

    def cell(v: dict[str, Any], n: int, key: str) -> str:
        return "saturated" if v[f"{key}saturated_{n}_cores"] \
            else f"{v[f'{key}mean_cold_start_{n}_cores_s']:.2f}"
    for name, v in proj["variants"].items():
        t.add_row(name, f"{v['serial_fraction']:.2f}", f"{v['measured_mean_cold_start_s']:.2f}",
                  f"{v['service_s']:.2f}",
                  *(f"{cell(v, n, 'same_trace_')} / {cell(v, n, '')}" for n in cores))
    t.caption = proj["formula"] + ". " + proj["assumptions"]
    return t
