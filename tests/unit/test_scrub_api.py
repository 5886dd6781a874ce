"""pyxen's scrub API parts that need no Xen."""

from __future__ import annotations

import pytest

from pyxen.xenctrl import ScrubPolicy


def test_policy_parses_names_and_members() -> None:
    assert ScrubPolicy.parse("idle") is ScrubPolicy.IDLE
    assert ScrubPolicy.parse(ScrubPolicy.EAGER) is ScrubPolicy.EAGER
    with pytest.raises(ValueError, match=r"unknown scrub policy 'Eager' \(one of: idle, eager\)"):
        ScrubPolicy.parse("Eager")
