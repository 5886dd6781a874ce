"""The teardown test's reading of its looks (tests/xen/test_scrub.py, run in
the lab's dom0): what node 1's idle CPU scrubbed after a quiet spell of the
frees is Xen's design, not a scrub alongside them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hypothesis import given
from hypothesis import strategies as st


def load() -> ModuleType:
    path = Path(__file__).parents[1] / "xen" / "test_scrub.py"
    spec = importlib.util.spec_from_file_location("xen_test_scrub", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


scrub = load()
Look = scrub.Look


def looks(*steps: tuple[float, int, int]) -> list:  # type: ignore[type-arg]
    """Looks at (start ms, freed, scrubbed), each read taking 1 ms."""
    return [Look(t / 1000, (t + 1) / 1000, f, b) for t, f, b in steps]


def test_frees_without_a_pause_allow_nothing() -> None:
    seen = looks((0, 100, 0), (3, 200, 50), (6, 300, 80), (9, 400, 90))
    assert scrub.scrubbed_in_quiet_spells(seen) == [0, 0, 0, 0]


def test_a_quiet_spell_allows_its_scrub_up_to_the_look_after_it() -> None:
    # freed stands at 200 from the look at 3 ms to the one at 20 ms: at
    # least 20 - 4 = 16 ms without a free; the last one came after 0 ms
    seen = looks((0, 100, 0), (3, 200, 10), (10, 200, 300), (20, 200, 900),
                 (23, 300, 1000), (26, 400, 1100), (29, 500, 1150))
    assert scrub.scrubbed_in_quiet_spells(seen) == [0, 0, 290, 890, 990, 990, 990]


def test_what_was_scrubbed_before_the_spell_was_over_is_not_allowed() -> None:
    # the same pause of at least 12 ms, but the step ending at 7 ms came
    # within 10 ms of the last free (after 0 ms): Xen had to leave the node
    seen = looks((0, 100, 0), (3, 200, 0), (6, 200, 50), (16, 200, 60), (19, 300, 60))
    assert scrub.scrubbed_in_quiet_spells(seen) == [0, 0, 0, 10, 10]


def test_a_pause_shorter_than_the_spell_allows_nothing() -> None:
    # 200 read at 3-4 ms and at 13 ms: 9 ms without a free at least, and
    # perhaps more, but a scrub beside frees is what the test looks for
    seen = looks((0, 100, 0), (3, 200, 10), (13, 200, 300), (16, 300, 400))
    assert scrub.scrubbed_in_quiet_spells(seen) == [0, 0, 0, 0]


@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 3), st.integers(0, 500)),
                max_size=30))
def test_what_is_allowed_never_exceeds_what_was_scrubbed(steps: list[tuple[int, int, int]]) -> None:
    t, f, b, seen = 0, 0, 0, []
    for dt, df, db in steps:
        t, f, b = t + dt, f + df, b + db
        seen.append(Look(t / 1000, (t + 0.5) / 1000, f, b))
    allowed = scrub.scrubbed_in_quiet_spells(seen)
    assert len(allowed) == len(seen)
    assert all(0 <= a <= look.scrubbed for a, look in zip(allowed, seen))
    assert allowed == sorted(allowed)
