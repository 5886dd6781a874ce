"""The autoscaling benchmark's host side: read and transform a trace, boot
each variant (stock, patched, ``+cache``) in turn, replay the trace in its
dom0 (pyxen.lab.dom0.autoscale), write ``bench.json`` with an
``autoscale`` section per variant and ``autoscale.png`` (the CDF of
cold-start latency, instances over time), and print each variant's
ratios to stock.  A run can replay each variant several times, and let
variants that differ only in libxenstore's cache share their boots."""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from pyxen.lab.contract import protocol
from pyxen.lab.contract.autoscale_result import pool_replays, what_was_lost
from pyxen.lab.contract.errors import LabError
from pyxen.lab.contract.faastrace import (MAX_REPLAY_S, PLATFORM_KEEP_ALIVE_S, Trace,
                                          Transform, decode_trace, parse_trace)
from pyxen.lab.contract.requests import AutoscaleRequest
from pyxen.lab.contract.turns import in_turn
from pyxen.lab.host import figures, paths, variants
from pyxen.lab.host.benchfile import BENCH_JSON, prepare_out, write_results
from pyxen.lab.host.progress import step
from pyxen.lab.host.provenance import describe_build
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild

log = logging.getLogger(__name__)

#: bench.json's format for an autoscale run (2: a variant replayed more
#: than once has a pooled section with its ``replays``; each replay names
#: its boot, round and RAM backing); readers refuse a newer one.
AUTOSCALE_FORMAT = 2
#: The "kind" of an autoscale run's bench.json (a storm's has none).
AUTOSCALE_KIND = "autoscale"
#: A request larger than this would not fit one command-line argument.
MAX_REQUEST_BYTES = 100_000
#: The fewest bytes an invocation adds to a request ("0, " "0.0, " "0.0, "):
#: a trace with more than MAX_REQUEST_BYTES / this many is refused before it
#: is transformed (its replicas could fill the memory first).
MIN_REQUEST_BYTES_PER_INVOCATION = 13


@dataclass(frozen=True)
class AutoscaleParams:
    trace: Path
    speedup: float = 10.0
    replicas: int = 1
    seed: int = 0
    keep_alive_s: float | None = None     # None: PLATFORM_KEEP_ALIVE_S / speedup
    memory_mib: int = 128
    max_inflight: int = 8
    driver: str = "pyxen"
    running: int = 0
    spinners_per_cpu: int = 0
    rounds: int = 1
    share_boot: bool = False

    def transform(self) -> Transform:
        return Transform(self.speedup, self.replicas, self.seed)

    def keep_alive(self) -> float:
        return PLATFORM_KEEP_ALIVE_S / self.speedup if self.keep_alive_s is None \
            else self.keep_alive_s

    def load(self) -> tuple[Trace, Trace]:
        """The trace as read and as it will be replayed; LabError if unreadable,
        TraceError (a ValueError) naming the line if malformed, ValueError
        naming the option if the replay would be too large or too long."""
        try:
            data = self.trace.read_bytes()
        except OSError as exc:
            raise LabError(f"cannot read the trace {self.trace}: {exc.strerror}") from None
        before = parse_trace(decode_trace(data, str(self.trace)), str(self.trace))
        count = len(before.invocations) * self.replicas
        self._check_count(count, count * MIN_REQUEST_BYTES_PER_INVOCATION > MAX_REQUEST_BYTES)
        schedule = self.transform().apply(before)
        self._check_length(before, schedule)
        return before, schedule

    @staticmethod
    def _check_count(invocations: int, too_many: bool) -> None:
        if too_many:
            raise ValueError(f"the transformed trace has {invocations} invocations, more "
                             "than one request to dom0 carries: lower --replicas")

    def _check_length(self, before: Trace, schedule: Trace) -> None:
        """ValueError naming the option to change if the replay would last
        longer than MAX_REPLAY_S."""
        end, keep_alive = schedule.end_s, self.keep_alive()
        if end + keep_alive <= MAX_REPLAY_S:
            return
        if self.keep_alive_s is None or end > MAX_REPLAY_S:
            change = "raise --speedup"
        elif keep_alive > MAX_REPLAY_S:
            change = "lower --keep-alive"
        else:
            change = "raise --speedup or lower --keep-alive"
        raise ValueError(f"the replay would last {end + keep_alive:.4g} s (the trace spans "
                         f"{before.span_s:.4g} s, {end:.4g} s at --speedup {self.speedup:g}; "
                         f"keep-alive {keep_alive:.4g} s), more than the "
                         f"{MAX_REPLAY_S / 86400:g} days a replay may last: {change}")

    def request(self, schedule: Trace, kernel: Path) -> AutoscaleRequest:
        req = AutoscaleRequest(
            kernel=kernel, funcs=tuple(i.func for i in schedule.invocations),
            starts=tuple(round(i.start_s, 4) for i in schedule.invocations),
            durations=tuple(round(i.duration_s, 4) for i in schedule.invocations),
            keep_alive_s=self.keep_alive(), memory_mib=self.memory_mib,
            max_inflight=self.max_inflight, driver=self.driver, running=self.running,
            spinners_per_cpu=self.spinners_per_cpu)
        self._check_count(len(schedule.invocations), len(req.to_json()) > MAX_REQUEST_BYTES)
        return req

    def validate(self) -> None:
        """ValueError/LabError naming what is wrong, before any build."""
        self.transform().check()
        _, schedule = self.load()
        self.request(schedule, Path("/"))


def run_replay(dom0: Dom0, request: AutoscaleRequest,
               lib_cache: bool | None = None) -> dict[str, Any]:
    """One replay in a booted dom0: its result.json.  ``lib_cache`` turns
    libxenstore's cache on or off for this replay alone (None: as dom0 was
    booted)."""
    span = max(request.starts) + max(request.durations) + request.keep_alive_s
    env = None if lib_cache is None else protocol.lib_cache_env(lib_cache)
    res = dom0.run([sys.executable, "-m", "pyxen.lab.dom0.autoscale",
                    "--request", request.to_json()],
                   timeout=(600 + 3 * span + 30 * len(request.funcs)
                            + protocol.running_guests_s(request.running)),
                   env=env)
    # Exit 1: the replay finished and its result reports something lost.
    return res.json_file(protocol.RESULT_FILE, "the autoscaling benchmark", ok_codes=(0, 1))


@dataclass(frozen=True)
class Boot:
    """One boot of a run: the build and dom0 setup it boots (``boots_as``),
    and the replays it runs in turn, each a variant and its round (from 0)."""

    boots_as: variants.RunVariant
    replays: tuple[tuple[variants.RunVariant, int], ...]

    @property
    def shared(self) -> bool:
        """Whether its replays turn libxenstore's cache on or off each for
        itself (the variants it runs differ in it)."""
        return len({v.lib_cache for v, _ in self.replays}) > 1


def boot_plan(run_variants: list[variants.RunVariant], rounds: int = 1,
              share_boot: bool = False) -> list[Boot]:
    """The boots a run makes, in order: ``rounds`` rounds, each replaying
    every variant once, the variants taking turns (as listed, then
    reversed).  Without ``share_boot`` each replay has a boot of its own.
    With it, variants that differ only in libxenstore's cache (the same
    build, the same proxy setting) share their round's boot and take turns
    in it, each replay switching the cache for itself: what differs between
    boots of the same build (up to 1.9x in the loaded replay's cold starts)
    then does not differ between them."""
    if rounds < 1:
        raise ValueError(f"rounds: {rounds} (at least 1)")
    if not share_boot:
        return [Boot(v, ((v, rnd),)) for rnd in range(rounds)
                for v in in_turn(run_variants, rnd)]
    by_setup: dict[tuple[str, bool], list[variants.RunVariant]] = {}
    for v in run_variants:
        by_setup.setdefault((v.build, v.xs_cache), []).append(v)
    groups = list(by_setup.values())
    return [Boot(group[0] if len(group) == 1 else dataclasses.replace(group[0], lib_cache=False),
                 tuple((v, rnd) for v in in_turn(group, rnd)))
            for rnd in range(rounds) for group in in_turn(groups, rnd)]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(runs: list[dict[str, Any]], base: str = "stock") -> dict[str, dict[str, float | None]]:
    """Each variant's cold-start and invocation-latency percentiles over
    those of the ``base`` variant (None where the run has no such variant)."""
    ref = next((r for r in runs if r["variant"] == base), None)
    out: dict[str, dict[str, float | None]] = {}
    for r in runs:
        out[r["variant"]] = {
            f"{what}_{p}": _ratio(r[key][p], ref[key][p] if ref else None)
            for what, key in (("cold", "cold_start_s"), ("latency", "invocation_latency_s"))
            for p in ("p50", "p90", "p99")}
    return out


def _fmt(x: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def _fmt_count(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _table_base(runs: list[dict[str, Any]]) -> str:
    """The variant the table's ratios are to: stock, else the first one
    (a run of patched against its caches compares them with patched)."""
    names = [r["variant"] for r in runs]
    return "stock" if "stock" in names or not names else names[0]


def summary_table(runs: list[dict[str, Any]]) -> Table:
    """Each variant's cold starts, their ratio to stock's (or, in a run
    without stock, to the first variant's), and what failed: fits 100
    columns with every name and number whole."""
    base = _table_base(runs)
    rel = ratios(runs, base)
    pooled = max((len(r.get("replays") or ()) for r in runs), default=0)
    t = Table(title=f"autoscaling replay: cold starts (s) and ratio to {base}"
              + (f", each variant's {pooled} replays pooled" if pooled else ""), pad_edge=False)
    for col in ("variant", "cold", "p50", "p99", "p50 x", "p99 x", "inv p99", "wait>1s",
                "failed", "peak", "xs"):
        t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True,
                     overflow="fold")
    for r in runs:
        c, x = r["cold_start_s"], rel[r["variant"]]
        t.add_row(r["variant"], str(c["count"]), _fmt(c["p50"], digits=1),
                  _fmt(c["p99"], digits=1), _fmt(x["cold_p50"], "x"), _fmt(x["cold_p99"], "x"),
                  _fmt(r["invocation_latency_s"]["p99"], digits=1), str(r["waited_over_1s"]),
                  str(r["invocations_failed"] + r["creates_failed"]
                      + r.get("destroys_failed", 0)),
                  str(r["peak_instances"]), _fmt_count(r.get("xs_requests_per_cold_start")))
    t.caption = ("cold: cold starts; p50/p99: their latency, decision to console line; "
                 "inv p99: arrival to end of an invocation; wait>1s: invocations that "
                 "waited over 1 s for an instance; failed: invocations, creates and "
                 "destroys that failed; xs: xenstored requests during the replay "
                 "(every client's) per cold start")
    return t


def plot(runs: list[dict[str, Any]], target: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in runs:
        cold = sorted(r["cold_start_each_s"])
        if cold:
            ax1.step(cold, [(i + 1) / len(cold) for i in range(len(cold))], where="post",
                     label=r["variant"])
        times = r["instances_over_time"]
        if times:
            ax2.step([t for t, _ in times], [n for _, n in times], where="post",
                     label=r["variant"] + (" (first replay)" if r.get("replays") else ""))
    ax1.set(xlabel="cold-start latency, s", ylabel="fraction of cold starts",
            title="cold starts (CDF)")
    ax2.set(xlabel="time into the replay, s", ylabel="instances", title="instances over time")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    figures.save(fig, target)


def _replay_boot(boot: Boot, staged: StagedBuild, request: AutoscaleRequest,
                 options: VMOptions, n_invocations: int, rounds: int) -> list[dict[str, Any]]:
    """The boot's replays' results, in its order.  A boot that fails fails
    the replays it had left; so does a replay that lost something (what it
    left behind would be found again by the next), and the rest are
    reported as not run.  Replays sharing a boot name their guests apart."""
    results: list[dict[str, Any]] = []
    try:
        with Dom0(staged, boot.boots_as.vm_options(options)) as dom0:
            for k, (v, rnd) in enumerate(boot.replays):
                req = request if len(boot.replays) == 1 else \
                    dataclasses.replace(request, prefix=f"{request.prefix}{k + 1}-")
                try:
                    with step(f"replaying {n_invocations} invocations on {v.name}"
                              + (f", round {rnd + 1}" if rounds > 1 else "")):
                        result = run_replay(dom0, req, v.lib_cache if boot.shared else None)
                except LabError as exc:
                    result = {"errors": [str(exc)], "failed_to_run": True}
                results.append({**result, "qemu_ram_backing": dom0.ram_backing()})
                if what_was_lost(result) and k + 1 < len(boot.replays):
                    reason = (f"not run: {v.name}'s replay before it in the same boot "
                              "lost something")
                    results += [{"errors": [reason], "failed_to_run": True}
                                for _ in boot.replays[k + 1:]]
                    break
    except LabError as exc:
        results += [{"errors": [str(exc)], "failed_to_run": True}
                    for _ in boot.replays[len(results):]]
    return results


def run_autoscale(run_variants: list[variants.RunVariant], builds: dict[str, StagedBuild],
                  params: AutoscaleParams, options: VMOptions,
                  out_dir: Path) -> dict[str, Any]:
    """Replay the trace ``params.rounds`` times on each variant, in the
    boots :func:`boot_plan` gives, write ``bench.json`` (a variant replayed
    more than once has one section pooled from its replays) and
    ``autoscale.png``, print the table; LabError after writing them if any
    variant lost something (failed creates or destroys, leftovers,
    unfinished invocations).  A run no replay of which ran writes
    ``bench.failed.json`` instead (benchfile.write_results)."""
    before, schedule = params.load()
    prepare_out(out_dir, BENCH_JSON, AUTOSCALE_KIND)
    guest = paths.tinyguest_path().absolute()
    if not guest.exists():
        raise LabError(f"tiny guest not built ({guest}): run \"pip install '.[lab]'\"")
    request = params.request(schedule, guest)
    plan = boot_plan(run_variants, params.rounds, params.share_boot)
    by_variant: dict[str, list[dict[str, Any]]] = {v.name: [] for v in run_variants}
    for n, boot in enumerate(plan):
        staged = builds[boot.boots_as.build]
        for (v, rnd), result in zip(boot.replays, _replay_boot(
                boot, staged, request, options, len(schedule.invocations), params.rounds)):
            by_variant[v.name].append({**describe_build(staged), **result,
                                       "boot": n + 1, "round": rnd + 1})
    runs = [{"variant": name, **(rs[0] if len(rs) == 1 else pool_replays(rs))}
            for name, rs in by_variant.items()]
    complete = [r for r in runs if not r.get("failed_to_run")]
    doc = {
        "format": AUTOSCALE_FORMAT,
        "kind": AUTOSCALE_KIND,
        "trace": {"file": str(params.trace), **params.transform().describe(before, schedule)},
        "keep_alive_s": params.keep_alive(),
        "load": {"running": params.running, "spinners_per_cpu": params.spinners_per_cpu},
        "rounds": params.rounds,
        "boots": [{"boots_as": b.boots_as.name,
                   "replays": [f"{v.name} round {rnd + 1}" for v, rnd in b.replays]}
                  for b in plan],
        "autoscale": {r["variant"]: r for r in runs},
        "ratios_to_stock": ratios(complete),
        "vm": options.record(),
    }
    written = write_results(out_dir, BENCH_JSON, doc, lambda png: plot(complete, png),
                            "autoscale.png", summary_table(complete), any_good=bool(complete))
    lost = {r["variant"]: reasons for r in runs if (reasons := what_was_lost(r))}
    if lost:
        raise LabError("the replay lost something on " + "; ".join(
            f"{name}: {reasons[0]}" + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1
                                       else "")
            for name, reasons in lost.items()) + f" (every run is in {written})")
    return doc
