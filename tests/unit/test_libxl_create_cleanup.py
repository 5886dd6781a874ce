"""Libxl.create and Host.create leave no domain behind, whatever stops them
(a failure, or an exception such as KeyboardInterrupt, which Python raises
after libxl's call returns), without a hypervisor: libxl's create, unpause and
destroy are stand-ins whose outcomes a test scripts."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyxen._native", reason="pyxen._xen not built (pip install .)")

from pyxen import host as host_mod  # noqa: E402
from pyxen import libxl  # noqa: E402
from pyxen._native import ffi  # noqa: E402
from pyxen._native import lib as real_lib  # noqa: E402
from pyxen.config import DomainConfig  # noqa: E402
from pyxen.errors import DomainNotFound, LibxlError, XenstoreError  # noqa: E402

DOMID = 9


class Interrupted(KeyboardInterrupt):
    """The stand-in's Ctrl-C (a KeyboardInterrupt, told apart from a real one)."""


class ScriptedLib:
    """The real cffi lib, with libxl_domain_create_new, _unpause and _destroy
    playing their outcomes: "ok", "fail" (ERROR_FAIL) or "interrupt".  The
    domains that exist are kept, so a test sees what is left behind."""

    def __init__(self, create: str, unpause: str = "ok") -> None:
        self.create, self.unpause = create, unpause
        self.domains: set[int] = set()
        self.destroyed: list[int] = []

    def _play(self, outcome: str) -> int:
        if outcome == "interrupt":
            raise Interrupted
        return 0 if outcome == "ok" else int(real_lib.ERROR_FAIL)

    def libxl_domain_create_new(self, ctx: Any, d: Any, domid: Any, ao: Any, aop: Any) -> int:
        # libxl sets the id once the domain exists; on a failure it destroys
        # the domain itself before returning.
        domid[0] = DOMID
        if self.create != "fail":
            self.domains.add(DOMID)
        return self._play(self.create)

    def libxl_domain_unpause(self, ctx: Any, domid: int, ao: Any) -> int:
        return self._play(self.unpause)

    def libxl_domain_destroy(self, ctx: Any, domid: int, ao: Any) -> int:
        if domid not in self.domains:
            return int(real_lib.ERROR_DOMAIN_NOTFOUND)
        self.domains.discard(domid)
        self.destroyed.append(domid)
        return 0

    def pyxen_deadlocked_children(self) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(real_lib, name)


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    k = tmp_path / "tinyguest"
    k.write_bytes(b"\x7fELF")
    return k


def scripted(monkeypatch: pytest.MonkeyPatch, **outcomes: str) -> tuple[libxl.Libxl, ScriptedLib]:
    fake = ScriptedLib(**outcomes)
    monkeypatch.setattr(libxl, "lib", fake)
    monkeypatch.setattr(libxl.Libxl, "_fill", lambda self, d, cfg: None)
    xl = libxl.Libxl.__new__(libxl.Libxl)   # no context: the stand-ins need none
    xl._logger = ffi.NULL
    xl._h = ffi.NULL
    return xl, fake


@pytest.mark.parametrize("create,unpause", [("interrupt", "ok"), ("ok", "interrupt")])
def test_an_interrupted_create_destroys_the_domain(monkeypatch, kernel, create, unpause):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, create=create, unpause=unpause)
    with pytest.raises(Interrupted):
        xl.create(DomainConfig("c", kernel))
    assert fake.domains == set() and fake.destroyed == [DOMID]


def test_a_failed_unpause_destroys_the_domain(monkeypatch, kernel):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, create="ok", unpause="fail")
    with pytest.raises(LibxlError, match="libxl_domain_unpause"):
        xl.create(DomainConfig("c", kernel))
    assert fake.domains == set() and fake.destroyed == [DOMID]


def test_a_failed_create_is_left_to_libxl(monkeypatch, kernel, caplog):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, create="fail")
    with pytest.raises(LibxlError, match="libxl_domain_create_new"):
        xl.create(DomainConfig("c", kernel))
    assert fake.destroyed == [] and not caplog.records


def test_a_paused_create_returns_the_domain(monkeypatch, kernel):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, create="ok", unpause="interrupt")
    assert xl.create(DomainConfig("c", kernel), paused=True) == DOMID
    assert fake.domains == {DOMID}


def test_a_missing_kernel_is_refused_before_any_domain(monkeypatch, kernel, tmp_path):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, create="ok")
    with pytest.raises(FileNotFoundError, match="kernel is not a file"):
        xl.create(DomainConfig("c", tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="ramdisk is not a file"):
        xl.create(DomainConfig("c", kernel, ramdisk=tmp_path / "missing"))
    assert fake.domains == set()


def test_host_create_destroys_a_domain_it_cannot_hand_over(monkeypatch, kernel):  # type: ignore[no-untyped-def]
    class Pool:
        destroyed: list[int] = []

        def create(self, cfg: DomainConfig, paused: bool = False) -> int:
            return DOMID

        def destroy_quietly(self, domid: int) -> None:
            self.destroyed.append(domid)

    def interrupted(*args: Any) -> None:
        raise Interrupted

    monkeypatch.setattr(host_mod, "Domain", interrupted)
    h = host_mod.Host()
    h._xl = Pool()  # type: ignore[assignment]
    with pytest.raises(Interrupted):
        h.create(DomainConfig("c", kernel))
    assert Pool.destroyed == [DOMID]


def test_the_pool_destroys_a_domain_made_while_its_context_was_given_back(monkeypatch, kernel):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, create="ok")
    pool = libxl.LibxlPool()
    lent = []

    @contextmanager
    def lend():  # type: ignore[no-untyped-def]
        lent.append(xl)
        yield xl
        if len(lent) == 1:  # the interrupt as the create's context goes back
            raise Interrupted

    monkeypatch.setattr(pool, "lend", lend)
    with pytest.raises(Interrupted):
        pool.create(DomainConfig("c", kernel))
    assert fake.domains == set() and fake.destroyed == [DOMID]


def test_a_name_xl_allows_is_looked_up(monkeypatch):  # type: ignore[no-untyped-def]
    xl, fake = scripted(monkeypatch, create="ok")
    seen: list[bytes] = []

    def name_to_domid(ctx: Any, name: bytes, domid: Any) -> int:
        seen.append(name)
        return int(real_lib.ERROR_INVAL)  # what libxl answers for no such name

    monkeypatch.setattr(fake, "libxl_name_to_domid", name_to_domid, raising=False)
    with pytest.raises(DomainNotFound, match="web server"):
        xl.name_to_domid("web server")
    assert seen == [b"web server"]
    with pytest.raises(ValueError, match="without NUL"):
        xl.name_to_domid("a\0b")


def name_lookup_failing(monkeypatch: pytest.MonkeyPatch, err: int) -> libxl.Libxl:
    """A Libxl whose libxl_domid_to_name fails as xs_read does, with ``err``."""
    xl, fake = scripted(monkeypatch, create="ok")

    def domid_to_name(ctx: Any, domid: int) -> Any:
        ffi.errno = err
        return ffi.NULL

    monkeypatch.setattr(fake, "libxl_domid_to_name", domid_to_name, raising=False)
    return xl


def test_a_domain_without_a_name_is_not_found(monkeypatch):  # type: ignore[no-untyped-def]
    xl = name_lookup_failing(monkeypatch, errno.ENOENT)
    with pytest.raises(DomainNotFound, match="/local/domain/7/name") as caught:
        xl.domid_to_name(7)
    assert caught.value.errno == errno.ENOENT


def test_a_name_lookup_that_fails_otherwise_is_a_xenstore_error(monkeypatch):  # type: ignore[no-untyped-def]
    # e.g. xenstored refusing the read: not "no such domain", which
    # Host.domains() would skip
    xl = name_lookup_failing(monkeypatch, errno.EACCES)
    with pytest.raises(XenstoreError, match=r"\[EACCES\]") as caught:
        xl.domid_to_name(7)
    assert caught.value.errno == errno.EACCES and not isinstance(caught.value, DomainNotFound)
