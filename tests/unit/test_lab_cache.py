"""The lab's cache on the host, with no Xen: where it is, and which of its paths QEMU can take."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import hostdeps, paths, xenbuild


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))


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
