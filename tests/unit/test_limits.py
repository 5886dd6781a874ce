"""The range checks values pass before they reach Xen's C libraries."""

from __future__ import annotations

from typing import Any

import pytest

from pyxen import limits


@pytest.mark.parametrize("check,good,bad,message", [
    (limits.domid, [0, 1, 0x7FEF], [-1, 0x7FF0, 0xFFFF, True, 1.0, "1"], "domid must be"),
    (limits.mfn, [0, (1 << 52) - 1], [-1, 1 << 52, False], "mfn must be"),
    (limits.evtchn_port, [1, (1 << 32) - 1], [0, -1, 1 << 32, True], "event channel port"),
])
def test_each_kind_of_value_keeps_to_its_range(check: Any, good: list[Any], bad: list[Any],
                                               message: str) -> None:
    for value in good:
        assert check(value) == value
    for value in bad:
        with pytest.raises(ValueError, match=message) as err:
            check(value)
        assert repr(value) in str(err.value)
