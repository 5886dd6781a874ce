"""What an autoscaling replay's result (the dom0 side's ``result.json``,
one variant's ``autoscale`` section of bench.json) says was lost.  Both
sides judge a run by this one rule: dom0 exits 1 on it, the host reports it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
