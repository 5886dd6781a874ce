from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxen.lab.guestcfg import NAME_RE, GuestConfig

K = Path("/opt/pyxen/tinyguest")


def test_render_is_a_pv_config_xl_understands():
    text = GuestConfig("tg-1", K, memory_mib=16, vcpus=2).render()
    lines = dict(line.split(" = ", 1) for line in text.strip().splitlines())
    assert lines["name"] == '"tg-1"'
    assert lines["type"] == '"pv"'
    assert lines["kernel"] == f'"{K}"'
    assert lines["memory"] == "16" and lines["maxmem"] == "16"
    assert lines["vcpus"] == "2"
    assert lines["on_crash"] == '"preserve"'


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", 'a"b', "x" * 65, "123", "é"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="domain name"):
        GuestConfig(name, K)


@pytest.mark.parametrize("kw,msg", [
    ({"memory_mib": -16}, "memory_mib"), ({"memory_mib": 0}, "memory_mib"),
    ({"memory_mib": 3}, "memory_mib"), ({"memory_mib": 16.5}, "memory_mib"),
    ({"vcpus": 0}, "vcpus"), ({"vcpus": 129}, "vcpus"),
    ({"kernel": Path("relative/kernel")}, "absolute"),
    ({"kernel": Path('/a"b')}, "cannot hold"),
])
def test_bad_values_are_refused(kw, msg):
    args = {"name": "ok", "kernel": K, **kw}
    with pytest.raises(ValueError, match=msg):
        GuestConfig(**args)


@given(st.from_regex(NAME_RE, fullmatch=True).filter(lambda s: not s.isdigit()))
def test_valid_names_round_trip(name):
    text = GuestConfig(name, K).render()
    assert f'name = "{name}"' in text.splitlines()
