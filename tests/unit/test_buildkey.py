from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pyxen.lab.host.buildkey import build_key


def _patches(tmp: Path, contents: list[bytes]) -> list[Path]:
    out = []
    for i, data in enumerate(contents):
        p = tmp / f"{i:04d}-change.patch"
        p.write_bytes(data)
        out.append(p)
    return out


@given(st.lists(st.binary(max_size=64), max_size=4), st.binary(max_size=64))
def test_key_changes_iff_a_patch_changes(tmp_path_factory, contents, new):
    tmp = tmp_path_factory.mktemp("p")
    patches = _patches(tmp, contents)
    before = build_key("xen", "4.17.5", patches, {"kconfig": {}})
    assert before == build_key("xen", "4.17.5", patches, {"kconfig": {}})  # stable
    if not patches:
        return
    old = patches[0].read_bytes()
    patches[0].write_bytes(new)
    after = build_key("xen", "4.17.5", patches, {"kconfig": {}})
    assert (after == before) == (new == old)


def test_key_depends_on_every_input(tmp_path):
    patches = _patches(tmp_path, [b"a", b"b"])
    base = build_key("xen", "4.17.5", patches, {"kconfig": {}})
    assert build_key("tools", "4.17.5", patches, {"kconfig": {}}) != base
    assert build_key("xen", "4.17.6", patches, {"kconfig": {}}) != base
    assert build_key("xen", "4.17.5", patches[::-1], {"kconfig": {}}) != base  # order
    assert build_key("xen", "4.17.5", patches[:1], {"kconfig": {}}) != base
    assert build_key("xen", "4.17.5", patches, {"kconfig": {"DEBUG": "y"}}) != base
    assert build_key("xen", "4.17.5", [], {"kconfig": {}}) != base


def test_key_ignores_where_patches_live(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _patches(tmp_path / "a", [b"x"])
    b = _patches(tmp_path / "b", [b"x"])
    assert build_key("xen", "v", a, {}) == build_key("xen", "v", b, {})


def test_key_of_option_dicts_is_order_independent():
    assert build_key("xen", "v", [], {"kconfig": {"A": "y", "B": "n"}}) == \
        build_key("xen", "v", [], {"kconfig": {"B": "n", "A": "y"}})
