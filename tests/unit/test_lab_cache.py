"""The lab's cache on the host, with no Xen: where it is, which of its paths
QEMU can take, what a damaged build entry becomes, and what the compiler of
the native builds is."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pyxen.lab.contract.errors import BuildError, LabError
from pyxen.lab.host import hostdeps, nativebuild, paths, sources, xenbuild
from pyxen.lab.host.vm_options import check_qemu_path


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)


# Where the cache is: always an absolute path (dom0 runs chrooted, with / as
# its working directory, and finds the staged builds at their host paths).

def test_a_relative_cache_is_taken_from_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.CACHE_ENV, "rel/cache")
    assert paths.cache_root() == tmp_path.resolve() / "rel" / "cache"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(paths.CACHE_ENV, "~/c")
    assert paths.cache_root() == tmp_path.resolve() / "home" / "c"


def test_a_relative_xdg_cache_home_is_ignored(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "xdg")     # invalid: the XDG spec says ignore it
    assert paths.cache_root() == tmp_path / "home" / ".cache" / "pyxen"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_root() == tmp_path / "xdg" / "pyxen"


@pytest.mark.parametrize("odd", ["my cache", "a,b"])
def test_a_cache_qemu_cannot_take_is_refused_before_any_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, odd: str) -> None:
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / odd))

    def no_build(*args: object) -> None:
        raise AssertionError("the build went ahead")

    monkeypatch.setattr(hostdeps, "check", no_build)
    monkeypatch.setattr(xenbuild, "build_hypervisor", no_build)
    with pytest.raises(LabError, match=r"the lab's cache .*QEMU cannot take"):
        xenbuild.build(object())    # type: ignore[arg-type]


# A build cache entry is complete when its manifest is that of its key and
# its outputs are there; anything else is built again.

def _source(tmp_path: Path) -> sources.XenSource:
    tree = tmp_path / "pristine"
    (tree / "xen").mkdir(parents=True, exist_ok=True)
    return sources.XenSource(tree=tree, version="4.22.0", sha256="0" * 64,
                             origin=str(tmp_path / "x.tar.gz"), verified=False)


def _cached(tmp_path: Path, builds: list[str]) -> Path:
    def recipe(src: Path, work: Path, logfile: Path) -> None:
        builds.append(work.name)
        for name in xenbuild.HYPERVISOR_OUTPUTS:
            (work / name).write_text(f"built {name}\n")

    variant = xenbuild.Variant("stock", _source(tmp_path))
    return xenbuild._cached_build("xen", "k1", variant, (), "now", {}, recipe,
                                  xenbuild.HYPERVISOR_OUTPUTS)


@pytest.mark.parametrize("damage", ["empty manifest", "other key", "no image"])
def test_a_damaged_build_entry_is_built_again(tmp_path: Path, damage: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    builds: list[str] = []
    out = _cached(tmp_path, builds)
    assert len(builds) == 1 and (out / "xen").read_text() == "built xen\n"
    assert _cached(tmp_path, builds) == out and len(builds) == 1     # reused
    if damage == "empty manifest":
        (out / "manifest.json").write_text("")
    elif damage == "other key":
        (out / "manifest.json").write_text(json.dumps({"key": "k2"}))
    else:
        (out / "xen").unlink()
    with caplog.at_level(logging.WARNING):
        assert _cached(tmp_path, builds) == out
    assert len(builds) == 2 and (out / "xen").read_text() == "built xen\n"
    assert json.loads((out / "manifest.json").read_text())["key"] == "k1"
    assert f"{out} is damaged" in caplog.text


# The native builds' compiler: $CC as a shell would split it, in their key.

def _fake_cc(tmp_path: Path) -> Path:
    cc = tmp_path / "fake cc"
    cc.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/cc.args"\n'
                  'while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done\n'
                  ': > "$out"\n')
    cc.chmod(0o755)
    return cc


def test_cc_with_flags_is_split_as_a_shell_would(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cc = _fake_cc(tmp_path)
    monkeypatch.setenv("CC", f"'{cc}' -m64")
    src = tmp_path / "x.c"
    src.write_text("int x;\n")
    out = nativebuild._compile_cached(tmp_path / "stage", "tk", src, "x.so", ["-shared"], [])
    assert out.exists()
    assert (tmp_path / "cc.args").read_text().splitlines()[:2] == ["-m64", "-shared"]


def test_a_compiler_that_cannot_run_is_a_build_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", f"{tmp_path / 'no-such-cc'} -m64")
    src = tmp_path / "x.c"
    src.write_text("int x;\n")
    with pytest.raises(BuildError, match="no-such-cc"):
        nativebuild._compile_cached(tmp_path / "stage", "tk", src, "x.so", [], [])


def test_the_compiler_is_in_the_native_builds_keys(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cc = _fake_cc(tmp_path)
    src = tmp_path / "x.c"
    src.write_text("int x;\n")
    keys, outs = set(), set()
    for flags in ("", " -m32"):
        monkeypatch.setenv("CC", f"'{cc}'{flags}")
        keys.add(nativebuild.native_key("tk"))
        outs.add(nativebuild._compile_cached(tmp_path / "stage", "tk", src, "x.so", [], []))
    assert len(keys) == 2 and len(outs) == 2
    assert (tmp_path / "cc.args").read_text().splitlines()[0] == "-m32"   # built anew


def test_a_cache_given_through_a_symbolic_link_keeps_the_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The link is how a user gives QEMU a path its target (with a space) is not.
    target = tmp_path / "a b" / "cache"
    target.mkdir(parents=True)
    (tmp_path / "link").symlink_to(target)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.CACHE_ENV, "link")
    assert paths.cache_root() == tmp_path / "link"
    check_qemu_path(paths.cache_root(), "the lab's cache")      # no space: taken


def test_a_cc_that_cannot_be_split_is_an_error_naming_cc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", 'gcc "-m64')
    with pytest.raises(LabError, match=r"\$CC 'gcc \"-m64' cannot be read as a command"):
        nativebuild.compiler()
