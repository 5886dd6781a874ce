"""What an autoscaling replay's result (the dom0 side's ``result.json``,
one variant's ``autoscale`` section of bench.json) says was lost.  Both
sides judge a run by this one rule: dom0 exits 1 on it, the host reports it.
A variant replayed more than once has one section pooled from its replays."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pyxen.lab.contract.percentiles import percentiles


def what_was_lost(result: Mapping[str, Any]) -> list[str]:
    """Why the run lost something, one phrase a reason; empty if nothing was.
    A result without the key for a check (a variant that never ran) fails it."""
    reasons = [str(e) for e in result.get("errors") or []]
    if result.get("leftover_domains"):
        reasons.append(f"domains left: {', '.join(result['leftover_domains'])}")
    if result.get("xenstore_nodes_left"):
        reasons.append("Xenstore nodes left under /local/domain: "
                       + ", ".join(result["xenstore_nodes_left"]))
    if result.get("memory_not_returned_mib"):
        reasons.append(f"{result['memory_not_returned_mib']} MiB of free memory not returned")
    done, total = result.get("invocations_done"), result.get("invocations")
    if done is None or total is None or done < total:
        reasons.append(f"{done if done is not None else 'no'} of "
                       f"{total if total is not None else 'the'} invocations completed")
    return reasons


#: A pooled section's percentiles, each from its replays' samples.
POOLED_SAMPLES = {"cold_start_s": "cold_start_each_s",
                  "invocation_latency_s": "invocation_latency_each_s",
                  "destroy_s": "destroy_each_s"}
#: Counts a pooled section sums over its replays.
SUMMED = ("invocations", "invocations_done", "invocations_failed", "cold_invocations",
          "waited_over_1s", "creates", "creates_failed", "destroys_failed",
          "memory_not_returned_mib", "xs_requests")
#: Counts by name (request types, watch tokens) a pooled section sums.
SUMMED_BY_NAME = ("xs_requests_by_op", "xs_watch_events")
#: What lost things a pooled section lists from every replay.
LISTED = ("leftover_domains", "xenstore_nodes_left")
#: One replay's own circumstances (and where the host ran it): kept in
#: ``replays`` only.
PER_REPLAY = ("scrub_settle", "free_memory_mib_before", "free_memory_mib_after",
              "running", "boot", "round", "qemu_ram_backing")


def _name(index: int, replay: Mapping[str, Any]) -> str:
    """How a pooled section names one of its replays: by its round (the
    host numbers them), else by its place."""
    return f"round {replay.get('round') or index + 1}"


def pool_replays(replays: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One variant's section from several replays of the same trace: the
    percentiles of all their samples together, counts summed, peaks the
    highest, every loss and error kept (each named by its replay's round),
    the first replay's timeline; each replay's own result in ``replays``.
    A replay that failed to run adds its errors and nothing else."""
    if not replays:
        raise ValueError("no replay to pool")
    ran = [r for r in replays if not r.get("failed_to_run")]
    first = dict(ran[0] if ran else replays[0])
    pooled: dict[str, Any] = {k: v for k, v in first.items() if k not in PER_REPLAY}
    for summary, samples in POOLED_SAMPLES.items():
        each = [x for r in ran for x in r.get(samples) or ()]
        pooled[samples] = each
        pooled[summary] = percentiles(each)
    for key in SUMMED:
        values = [r.get(key) for r in ran]
        pooled[key] = sum(values) if ran and None not in values else None
    for key in SUMMED_BY_NAME:
        total: Counter[str] = Counter()
        for r in ran:
            total.update(r.get(key) or {})
        pooled[key] = dict(total.most_common()) if ran and all(
            r.get(key) is not None for r in ran) else None
    for key in LISTED:
        pooled[key] = [f"{_name(i, r)}: {x}" for i, r in enumerate(replays)
                       if not r.get("failed_to_run") for x in r.get(key) or ()]
    pooled["peak_instances"] = max((r.get("peak_instances") or 0 for r in ran), default=0)
    creates, xs = pooled.get("creates"), pooled.get("xs_requests")
    pooled["xs_requests_per_cold_start"] = xs / creates if xs is not None and creates else None
    pooled["errors"] = [f"{_name(i, r)}: {e}" for i, r in enumerate(replays)
                        for e in r.get("errors") or ()]
    pooled["failed_to_run"] = not ran
    pooled["replays"] = [dict(r) for r in replays]
    return pooled
