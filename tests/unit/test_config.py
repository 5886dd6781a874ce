from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxen.config import NAME_RE, DomainConfig, check_weight_scheduler

K = Path("/opt/pyxen/tinyguest")


def test_render_is_a_pv_config_xl_understands():
    text = DomainConfig("tg-1", K, memory_mib=16, vcpus=2).to_xl_config()
    lines = dict(line.split(" = ", 1) for line in text.strip().splitlines())
    assert lines["name"] == '"tg-1"'
    assert lines["type"] == '"pv"'
    assert lines["kernel"] == f'"{K}"'
    assert lines["memory"] == "16" and lines["maxmem"] == "16"
    assert lines["vcpus"] == "2"
    assert lines["on_crash"] == '"preserve"'


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", 'a"b', "x" * 65, "123", "é",
                                  "tg-1\n", "x" * 64 + "\n", ".", "..", "..."])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="domain name"):
        DomainConfig(name, K)


@pytest.mark.parametrize("kw,msg", [
    ({"memory_mib": -16}, "memory_mib"), ({"memory_mib": 0}, "memory_mib"),
    ({"memory_mib": 3}, "memory_mib"), ({"memory_mib": 16.5}, "memory_mib"),
    ({"memory_mib": 1 << 24}, "memory_mib must be 4..16777215"),
    ({"maxmem_mib": 1 << 24}, "maxmem_mib must be 16..16777215"),
    ({"cmdline": "x" * 1024}, "cmdline is 1024 bytes; a PV guest receives at most 1023"),
    ({"cmdline": "é" * 512}, "cmdline is 1024 bytes"),
    ({"cmdline": "a\nb"}, "line break or NUL"),
    ({"vcpus": 0}, "vcpus"), ({"vcpus": 129}, "vcpus"),
    ({"kernel": Path("relative/kernel")}, "absolute"),
    ({"kernel": Path('/a"b')}, "cannot hold"),
    ({"weight": 0}, "weight must be 1..65535, got 0"),
    ({"weight": 65536}, "weight must be 1..65535, got 65536"),
    ({"weight": True}, "weight must be an integer"), ({"weight": "1"}, "weight must be an integer"),
])
def test_bad_values_are_refused(kw, msg):
    args = {"name": "ok", "kernel": K, **kw}
    with pytest.raises(ValueError, match=msg):
        DomainConfig(**args)


@given(st.from_regex(NAME_RE, fullmatch=True).filter(lambda s: not s.isdigit() and s.strip(".")))
def test_valid_names_round_trip(name):
    text = DomainConfig(name, K).to_xl_config()
    assert f'name = "{name}"' in text.splitlines()


configs = st.builds(
    DomainConfig,
    name=st.from_regex(NAME_RE, fullmatch=True).filter(
        lambda s: not s.isdigit() and s.strip(".")),
    kernel=st.sampled_from([K, Path("/boot/vmlinuz-6.1"), Path("/a b/k.elf")]),
    memory_mib=st.integers(4, 1 << 20),
    vcpus=st.integers(1, 128),
    cmdline=st.text(st.characters(blacklist_characters="\n\r\0",
                                  blacklist_categories=["Cs"]), max_size=40),
    on_crash=st.sampled_from(["destroy", "preserve"]),
    weight=st.none() | st.integers(1, 65535),
)


@given(configs)
def test_xl_config_round_trips(cfg):
    again = DomainConfig.from_xl_config(cfg.to_xl_config())
    assert again == DomainConfig(**{**cfg.__dict__, "maxmem_mib": cfg.max_memory_mib})


def test_reads_what_xl_users_write():
    text = """
    # a tiny guest
    name = 'tg-7' ; type = "pv"
    kernel = "tinyguest"       # relative: to the config file's directory
    memory = 0x20
    vcpus = 2
    extra = "console=hvc0"
    """
    cfg = DomainConfig.from_xl_config(text, base_dir=Path("/srv/guests"))
    assert cfg.name == "tg-7" and cfg.kernel == Path("/srv/guests/tinyguest")
    assert cfg.memory_mib == 32 and cfg.vcpus == 2 and cfg.cmdline == "console=hvc0"


@pytest.mark.parametrize("text,msg", [
    ('name = "a"\nkernel = "/k"\nvif = ["bridge=xenbr0"]\n', "unsupported xl config key.*vif"),
    ('name = "a"\nkernel = "/k"\ntype = "hvm"\n', 'only type = "pv"'),
    ('kernel = "/k"\n', "no name"),
    ('name = "a"\n', "no kernel"),
    ('name = "a"\nkernel = "/k"\nmemory = "lots"\n', "memory_mib must be an integer"),
    ('name = "a"\nkernel = "/k"\nmemory = -16\n', "memory_mib must be 4..16777215"),
    ('name = "a" kernel = "/k"\n', "line 1: unexpected 'kernel'"),
    ('name "a"\n', "expected '=' after name"),
    ('name = \n', "expected a value"),
    ('name = "a"\nkernel = "/k"\n@\n', "line 3: unexpected '@'"),
    ('name = "a/b"\nkernel = "/k"\n', "invalid domain name"),
])
def test_bad_xl_configs_name_the_problem(text, msg):
    with pytest.raises(ValueError, match=msg):
        DomainConfig.from_xl_config(text)


def test_a_command_line_with_quotes_and_backslashes_goes_to_xl_and_back() -> None:
    cmdline = 'init="/bin/sh -c true" path=C:\\x quote=\'q\''
    text = DomainConfig("c", K, cmdline=cmdline).to_xl_config()
    # As xl reads it: a backslash and a double quote escaped, nothing else.
    assert 'cmdline = "init=\\"/bin/sh -c true\\" path=C:\\\\x quote=\'q\'"' in text
    assert DomainConfig.from_xl_config(text).cmdline == cmdline
    assert DomainConfig("c", K, cmdline="x" * 1023).cmdline == "x" * 1023


@pytest.mark.parametrize("escape,char", [("\\t", "\t"), ("\\v", "\v"), ("\\a", "\a"),
                                         ("\\'", "'"), ('\\"', '"'), ("\\\\", "\\")])
def test_the_escapes_xl_reads_are_read(escape: str, char: str) -> None:
    text = f'name = "a"\nkernel = "/k"\ncmdline = "x{escape}y"\n'
    assert DomainConfig.from_xl_config(text).cmdline == f"x{char}y"


@pytest.mark.parametrize("escape", ["\\q", "\\x41", "\\101", "\\ "])
def test_an_escape_xl_refuses_is_refused(escape: str) -> None:
    text = f'name = "a"\nkernel = "/k"\n\ncmdline = "x{escape}y"\n'
    with pytest.raises(ValueError, match=f"line 4: invalid escape"):
        DomainConfig.from_xl_config(text)


def test_lists_parse():
    from pyxen.config import parse_xl_config
    assert parse_xl_config('disk = [ "a", "b",\n "c" ]\n') == {"disk": ["a", "b", "c"]}


def test_maxmem_below_memory_is_refused():
    with pytest.raises(ValueError, match="maxmem_mib must be 16..16777215, got 8"):
        DomainConfig("x", K, memory_mib=16, maxmem_mib=8)


def test_nodes_are_validated_and_normalised() -> None:
    cfg = DomainConfig("n", Path("/k"), nodes=[1, 0])
    assert cfg.nodes == (1, 0)
    for bad, msg in (([], "non-empty"), ("1", "non-empty"), ([64], "nodes\\[\\] must be 0..63"),
                     ([-1], "nodes\\[\\] must be 0..63"), ([True], "nodes\\[\\]")):
        with pytest.raises(ValueError, match=msg):
            DomainConfig("n", Path("/k"), nodes=bad)


def test_nodes_cannot_go_to_an_xl_config() -> None:
    with pytest.raises(ValueError, match="nodes has no xl configuration equivalent"):
        DomainConfig("n", Path("/k"), nodes=(1,)).to_xl_config()


def test_a_weight_goes_to_the_xl_config_and_back() -> None:
    cfg = DomainConfig("w", K, weight=1)
    assert "weight = 1" in cfg.to_xl_config().splitlines()
    assert "weight" not in DomainConfig("w", K).to_xl_config()
    assert DomainConfig.from_xl_config('name = "w"\nkernel = "/k"\nweight = 512\n').weight == 512
    with pytest.raises(ValueError, match="weight must be 1..65535, got 0"):
        DomainConfig.from_xl_config('name = "w"\nkernel = "/k"\nweight = 0\n')


def test_a_weight_needs_a_scheduler_with_weights() -> None:
    check_weight_scheduler("credit")
    check_weight_scheduler("credit2")
    for sched in ("rtds", "null", "arinc653", "unknown"):
        with pytest.raises(ValueError, match=f"weight needs the credit or credit2 scheduler; "
                                             f"Xen runs {sched}"):
            check_weight_scheduler(sched)
