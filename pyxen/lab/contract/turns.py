"""The order in which the lab's comparisons take turns: what the host
boots and replays (autoscale's rounds) and what dom0 runs within a boot
(scrubbench's alternating policies) follow the same rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def in_turn(items: Sequence[T], rnd: int) -> list[T]:
    """``items`` in round ``rnd``'s order: as given, then reversed, and so
    on (A B, B A), so that none always goes first."""
    return list(items) if rnd % 2 == 0 else list(items)[::-1]
